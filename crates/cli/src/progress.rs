//! Progress on stderr: indicatif bars on a terminal, plain periodic lines otherwise, nothing
//! with `--no-progress` (notes and errors still print).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_store::progress::short_id;
use hearth_store::Reporter;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub enum Progress {
    Bars { multi: MultiProgress, bars: Mutex<HashMap<String, ProgressBar>> },
    Lines { transfers: Mutex<HashMap<String, Transfer>> },
    Quiet,
}

pub struct Transfer {
    total: Option<u64>,
    done: u64,
    started: Instant,
    start_done: u64,
    last_print: Instant,
}

impl Progress {
    pub fn new(no_progress: bool) -> Progress {
        if no_progress {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::new(HashMap::new()) }
        } else {
            Progress::Lines { transfers: Mutex::new(HashMap::new()) }
        }
    }

    fn line(&self, text: &str) {
        match self {
            Progress::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

impl Reporter for Progress {
    fn status(&self, status: &str) {
        if !matches!(self, Progress::Quiet) {
            self.line(status);
        }
    }

    fn start(&self, id: &str, total: Option<u64>, done: u64) {
        match self {
            Progress::Bars { multi, bars } => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                };
                let style = ProgressStyle::with_template(
                    "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template");
                bar.set_style(style);
                bar.set_prefix(short_id(id));
                bar.set_position(done);
                bar.reset_eta();
                let bar = multi.add(bar);
                if let Some(old) = bars.lock().expect("not poisoned").insert(id.to_string(), bar) {
                    old.finish_and_clear();
                }
            }
            Progress::Lines { transfers } => {
                let now = Instant::now();
                transfers.lock().expect("not poisoned").insert(
                    id.to_string(),
                    Transfer { total, done, started: now, start_done: done, last_print: now },
                );
                let size = total.map_or("unknown size".into(), human);
                let id = short_id(id);
                if done > 0 {
                    eprintln!("{id}: {size}, resuming at {}", human(done));
                } else {
                    eprintln!("{id}: {size}");
                }
            }
            Progress::Quiet => {}
        }
    }

    fn advance(&self, id: &str, n: u64) {
        match self {
            Progress::Bars { bars, .. } => {
                if let Some(b) = bars.lock().expect("not poisoned").get(id) {
                    b.inc(n);
                }
            }
            Progress::Lines { transfers } => {
                let mut t = transfers.lock().expect("not poisoned");
                if let Some(x) = t.get_mut(id) {
                    x.done += n;
                    if x.last_print.elapsed() >= Duration::from_secs(2) {
                        x.last_print = Instant::now();
                        let secs = x.started.elapsed().as_secs_f64().max(1e-3);
                        let rate = (x.done - x.start_done) as f64 / secs;
                        let pct = x.total.map(|t| format!(" ({:.0}%)", 100.0 * x.done as f64 / t.max(1) as f64)).unwrap_or_default();
                        let eta = x
                            .total
                            .filter(|_| rate > 0.0)
                            .map(|t| format!(", eta {:.0}s", t.saturating_sub(x.done) as f64 / rate))
                            .unwrap_or_default();
                        eprintln!("{}: {} of {}{pct} at {}/s{eta}", short_id(id), human(x.done), x.total.map_or("?".into(), human), human(rate as u64));
                    }
                }
            }
            Progress::Quiet => {}
        }
    }

    fn note(&self, id: &str, message: &str) {
        self.line(&format!("{}: {message}", short_id(id)));
    }

    fn finish(&self, id: &str) {
        match self {
            Progress::Bars { bars, .. } => {
                if let Some(b) = bars.lock().expect("not poisoned").remove(id) {
                    b.finish();
                }
            }
            Progress::Lines { transfers } => {
                if let Some(x) = transfers.lock().expect("not poisoned").remove(id) {
                    eprintln!("{}: done, {}", short_id(id), human(x.total.unwrap_or(x.done)));
                }
            }
            Progress::Quiet => {}
        }
    }
}
