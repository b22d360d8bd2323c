//! How long a model stays loaded after its last request, in Ollama's forms.

use std::time::Duration;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's forms: a number of seconds, or a duration string ("5m", "1h30m", "-1", "0").
    pub fn parse(v: &serde_json::Value) -> Result<KeepAlive, String> {
        match v {
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().ok_or("keep_alive is not a number")?;
                if secs < 0.0 { Ok(KeepAlive::Forever) } else { seconds(secs, &n.to_string()) }
            }
            serde_json::Value::String(s) => KeepAlive::parse_str(s),
            _ => Err("keep_alive must be a number of seconds or a duration such as \"5m\"".into()),
        }
    }

    pub fn parse_str(s: &str) -> Result<KeepAlive, String> {
        let s = s.trim();
        if s.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        if let Ok(secs) = s.parse::<f64>() {
            return seconds(secs, s);
        }
        let mut total = 0f64;
        let mut num = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            if c == 'm' && chars.peek() == Some(&'s') {
                unit.push(chars.next().expect("peeked"));
            }
            let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as \"5m\" or \"1h\""))?;
            num.clear();
            total += n * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return Err(format!("{s:?} is not a duration such as \"5m\" or \"1h\"")),
            };
        }
        if !num.is_empty() {
            return Err(format!("{s:?} has a number without a unit (s, m, h)"));
        }
        seconds(total, s)
    }
}

/// `secs` as a keep-alive; NaN, infinite and absurd values (past a hundred years) are errors,
/// not panics.
fn seconds(secs: f64, given: &str) -> Result<KeepAlive, String> {
    const MAX: f64 = 100.0 * 365.0 * 86400.0;
    if !secs.is_finite() || secs > MAX {
        return Err(format!("{given:?} is not a usable duration (use e.g. \"5m\", \"1h\", or -1 to keep the model loaded)"));
    }
    Duration::try_from_secs_f64(secs).map(KeepAlive::For).map_err(|e| format!("{given:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_forms() {
        let j = |v: serde_json::Value| KeepAlive::parse(&v);
        assert_eq!(j(serde_json::json!(0)), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(j(serde_json::json!(30)), Ok(KeepAlive::For(Duration::from_secs(30))));
        assert_eq!(j(serde_json::json!(-1)), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("5m")), Ok(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(j(serde_json::json!("1h30m")), Ok(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(j(serde_json::json!("-1")), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("-1m")), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("0")), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(j(serde_json::json!("250ms")), Ok(KeepAlive::For(Duration::from_millis(250))));
        assert!(j(serde_json::json!("5 minutes")).is_err());
        for absurd in [serde_json::json!(1e20), serde_json::json!("1e20"), serde_json::json!("NaN"), serde_json::json!("inf"), serde_json::json!("99999999999999h")] {
            assert!(j(absurd.clone()).is_err(), "{absurd}");
        }
        assert!(j(serde_json::json!(true)).is_err());
    }
}
