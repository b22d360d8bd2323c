//! The web page's conversations, kept in SQLite (`hearth.db` beside the model store, or
//! `$HEARTH_DB`): a conversation has a title, its model, system prompt and options, and an
//! ordered list of messages.
//!
//! The schema grows by [`MIGRATIONS`], applied in order on open and counted in SQLite's
//! `PRAGMA user_version`; a database written by a newer hearth is refused, not rewritten.
//! Everything here is blocking (rusqlite): the HTTP layer calls it on `spawn_blocking`.
//! The file is opened on first use, so a server whose page is never used creates nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The database file, when not the default `hearth.db` beside the store.
/// The variable that points at another database file (read by the cli).
pub const ENV_DB: &str = "HEARTH_DB";

/// The schema, one step per entry; entry `i` takes the database from version `i` to `i + 1`.
/// Never edit a released step: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: conversations and their messages.
    "CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        system TEXT NOT NULL DEFAULT '',
        options TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE messages (
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        model TEXT,
        stats TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, position)
    );
    CREATE INDEX conversations_updated ON conversations(updated_at DESC);",
];

/// Roles a stored message may have.
const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// The longest title kept, in characters.
const MAX_TITLE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the conversation database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the directory {} for the conversation database: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(
        "the conversation database {} has schema version {found}, newer than this hearth knows ({known}); \
         run a newer hearth, or point {ENV_DB} at another file",
        path.display()
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("migrating the conversation database {} to schema version {version} failed: {source}", path.display())]
    Migrate { path: PathBuf, version: usize, source: rusqlite::Error },
    #[error("conversation {0} not found")]
    NotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("conversation database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A conversation; `messages` only where they were asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    pub id: i64,
    pub title: String,
    /// The model new answers come from (a store name; may no longer exist).
    pub model: String,
    /// The system prompt sent first ("" for the model's own).
    pub system: String,
    /// Ollama `options` sent with each request (temperature, num_ctx, num_predict, ...).
    pub options: Map<String, Value>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// 0-based place in the conversation.
    pub position: i64,
    pub role: String,
    pub content: String,
    /// The model that wrote an answer.
    pub model: Option<String>,
    /// What the page measured for an answer (TTFT, tok/s, ...), kept as given.
    pub stats: Option<Value>,
    pub created_at: i64,
}

/// A message to store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stats: Option<Value>,
}

/// Fields of a conversation to set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
}

/// Where the database lives unless `HEARTH_DB` says otherwise (the cli decides): `hearth.db`
/// in the directory that holds the store (`~/.hearth/hearth.db` for the default store), so a
/// test's temporary store gets a temporary database.
pub fn default_path(store_root: &Path) -> PathBuf {
    store_root.parent().unwrap_or(store_root).join("hearth.db")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The conversation database: one connection, opened on first use.
pub struct Conversations {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl Conversations {
    /// A handle on the database at `path`; nothing is opened yet.
    pub fn new(path: PathBuf) -> Conversations {
        Conversations { path, conn: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection (opening and migrating the file first if needed). A failed
    /// open is tried again on the next call.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            *guard = Some(open(&self.path)?);
        }
        match guard.as_mut() {
            Some(conn) => f(conn),
            None => Err(DbError::Invalid("the conversation database is not open".into())),
        }
    }

    /// Conversations, most recently updated first; with `query`, only those whose title or
    /// any message contains it (case-insensitively for ASCII).
    pub fn list(&self, query: Option<&str>, limit: usize) -> Result<Vec<Conversation>, DbError> {
        let q = query.map(str::trim).unwrap_or("");
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, title, model, system, options, created_at, updated_at FROM conversations c
                 WHERE ?1 = ''
                    OR instr(lower(c.title), lower(?1)) > 0
                    OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND instr(lower(m.content), lower(?1)) > 0)
                 ORDER BY updated_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![q, limit.min(i64::MAX as usize) as i64], row_conversation)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Creates a conversation with `settings` applied and `messages` in it.
    pub fn create(&self, settings: Update, messages: Vec<NewMessage>) -> Result<Conversation, DbError> {
        check_update(&settings)?;
        check_messages(&messages)?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let options = Value::Object(settings.options.unwrap_or_default()).to_string();
            tx.execute(
                "INSERT INTO conversations (title, model, system, options, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    clean_title(settings.title.as_deref().unwrap_or("")),
                    settings.model.unwrap_or_default(),
                    settings.system.unwrap_or_default(),
                    options,
                    now,
                    next_stamp(&tx)?
                ],
            )?;
            let id = tx.last_insert_rowid();
            insert_messages(&tx, id, 0, &messages, now)?;
            let conv = load(&tx, id)?;
            tx.commit()?;
            Ok(conv)
        })
    }

    /// A conversation with its messages.
    pub fn get(&self, id: i64) -> Result<Conversation, DbError> {
        self.with(|c| load(c, id))
    }

    /// Sets the fields `update` names.
    pub fn update(&self, id: i64, update: Update) -> Result<Conversation, DbError> {
        check_update(&update)?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exists(&tx, id)?;
            if let Some(t) = &update.title {
                tx.execute("UPDATE conversations SET title = ?1 WHERE id = ?2", params![clean_title(t), id])?;
            }
            if let Some(m) = &update.model {
                tx.execute("UPDATE conversations SET model = ?1 WHERE id = ?2", params![m, id])?;
            }
            if let Some(s) = &update.system {
                tx.execute("UPDATE conversations SET system = ?1 WHERE id = ?2", params![s, id])?;
            }
            if let Some(o) = update.options {
                tx.execute("UPDATE conversations SET options = ?1 WHERE id = ?2", params![Value::Object(o).to_string(), id])?;
            }
            touch(&tx, id)?;
            let conv = load(&tx, id)?;
            tx.commit()?;
            Ok(conv)
        })
    }

    /// Deletes a conversation and its messages.
    pub fn delete(&self, id: i64) -> Result<(), DbError> {
        self.with(|c| match c.execute("DELETE FROM conversations WHERE id = ?1", params![id])? {
            0 => Err(DbError::NotFound(id)),
            _ => Ok(()),
        })
    }

    /// Replaces the messages from position `from` on (all of them for 0; none, i.e. appends,
    /// for `None`) with `messages`, in one transaction: what regenerate and edit-and-resend do.
    pub fn set_messages(&self, id: i64, from: Option<i64>, messages: Vec<NewMessage>) -> Result<Conversation, DbError> {
        check_messages(&messages)?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exists(&tx, id)?;
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM messages WHERE conversation_id = ?1", params![id], |r| r.get(0))?;
            let from = from.unwrap_or(count);
            if from < 0 || from > count {
                return Err(DbError::Invalid(format!("`from` is {from}, but conversation {id} has {count} messages (use 0 to {count})")));
            }
            tx.execute("DELETE FROM messages WHERE conversation_id = ?1 AND position >= ?2", params![id, from])?;
            insert_messages(&tx, id, from, &messages, now_ms())?;
            touch(&tx, id)?;
            let conv = load(&tx, id)?;
            tx.commit()?;
            Ok(conv)
        })
    }
}

/// Opens the file (creating its directory) and brings its schema up to date.
fn open(path: &Path) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir { path: dir.to_path_buf(), source })?;
    }
    let opened = |source| DbError::Open { path: path.to_path_buf(), source };
    let mut conn = Connection::open(path).map_err(opened)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(opened)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(opened)?;
    // WAL: readers never wait for a writer (a second `hearth serve` on the same store).
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(opened)?;
    migrate(&mut conn, path)?;
    tracing::debug!(path = %path.display(), "conversation database opened");
    Ok(conn)
}

/// Applies the migrations the database has not seen, each in its own transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|source| DbError::Open { path: path.to_path_buf(), source })?;
    if found > known {
        return Err(DbError::TooNew { path: path.to_path_buf(), found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i + 1;
        let failed = |source| DbError::Migrate { path: path.to_path_buf(), version, source };
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version as i64).map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version, "conversation database migrated");
    }
    Ok(())
}

fn clean_title(t: &str) -> String {
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let t: String = t.chars().take(MAX_TITLE).collect();
    if t.is_empty() {
        "New chat".into()
    } else {
        t
    }
}

fn check_update(u: &Update) -> Result<(), DbError> {
    if let Some(m) = &u.model {
        if m.chars().any(char::is_control) {
            return Err(DbError::Invalid(format!("invalid field `model`: {m:?} is not a model name")));
        }
    }
    Ok(())
}

fn check_messages(messages: &[NewMessage]) -> Result<(), DbError> {
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(DbError::Invalid(format!("invalid field `messages[{i}].role`: {:?} is not one of {}", m.role, ROLES.join(", "))));
        }
    }
    Ok(())
}

fn exists(c: &Connection, id: i64) -> Result<(), DbError> {
    let found: Option<i64> = c.query_row("SELECT id FROM conversations WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
    found.map(|_| ()).ok_or(DbError::NotFound(id))
}

/// Now, or just after the latest change if that is later: stamps strictly increase, so the
/// list follows the order of changes even within a millisecond.
fn next_stamp(c: &Connection) -> Result<i64, DbError> {
    let latest: Option<i64> = c.query_row("SELECT max(updated_at) FROM conversations", [], |r| r.get(0))?;
    Ok(latest.map_or(now_ms(), |l| now_ms().max(l + 1)))
}

fn touch(c: &Connection, id: i64) -> Result<(), DbError> {
    c.execute("UPDATE conversations SET updated_at = ?1 WHERE id = ?2", params![next_stamp(c)?, id])?;
    Ok(())
}

fn insert_messages(c: &Connection, id: i64, from: i64, messages: &[NewMessage], now: i64) -> Result<(), DbError> {
    let mut stmt = c.prepare(
        "INSERT INTO messages (conversation_id, position, role, content, model, stats, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, m) in messages.iter().enumerate() {
        let stats = m.stats.as_ref().filter(|s| !s.is_null()).map(Value::to_string);
        stmt.execute(params![id, from + i as i64, m.role, m.content, m.model, stats, now])?;
    }
    Ok(())
}

fn row_conversation(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conversation> {
    let options: String = r.get(4)?;
    Ok(Conversation {
        id: r.get(0)?,
        title: r.get(1)?,
        model: r.get(2)?,
        system: r.get(3)?,
        options: serde_json::from_str(&options).unwrap_or_default(),
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        messages: None,
    })
}

fn load(c: &Connection, id: i64) -> Result<Conversation, DbError> {
    let mut conv = c
        .query_row("SELECT id, title, model, system, options, created_at, updated_at FROM conversations WHERE id = ?1", params![id], row_conversation)
        .optional()?
        .ok_or(DbError::NotFound(id))?;
    let mut stmt = c.prepare(
        "SELECT position, role, content, model, stats, created_at FROM messages WHERE conversation_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        let stats: Option<String> = r.get(4)?;
        Ok(Message {
            position: r.get(0)?,
            role: r.get(1)?,
            content: r.get(2)?,
            model: r.get(3)?,
            stats: stats.and_then(|s| serde_json::from_str(&s).ok()),
            created_at: r.get(5)?,
        })
    })?;
    conv.messages = Some(rows.collect::<Result<Vec<_>, _>>()?);
    Ok(conv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn db() -> (tempfile::TempDir, Conversations) {
        let dir = tempfile::tempdir().unwrap();
        let db = Conversations::new(dir.path().join("sub").join("hearth.db"));
        (dir, db)
    }

    fn msg(role: &str, content: &str) -> NewMessage {
        NewMessage { role: role.into(), content: content.into(), ..Default::default() }
    }

    fn contents(c: &Conversation) -> Vec<String> {
        c.messages.as_ref().unwrap().iter().map(|m| format!("{}:{}", m.role, m.content)).collect()
    }

    #[test]
    fn migrations_run_once_and_record_the_version() {
        let (dir, db) = db();
        db.list(None, 10).unwrap();
        let path = dir.path().join("sub").join("hearth.db");
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(conn);
        // Opening again applies nothing (a second CREATE TABLE would fail).
        let again = Conversations::new(path.clone());
        assert!(again.list(None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_database_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Conversations::new(path).list(None, 10).unwrap_err();
        assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("HEARTH_DB"), "{err}");
    }

    #[test]
    fn an_unopenable_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Conversations::new(file.join("hearth.db")).list(None, 1).unwrap_err();
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn create_get_update_delete() {
        let (_d, db) = db();
        let options = json!({"temperature": 0.2, "num_ctx": 2048}).as_object().unwrap().clone();
        let c = db
            .create(
                Update { title: Some("  first\n chat ".into()), model: Some("smollm2".into()), system: Some("be brief".into()), options: Some(options.clone()) },
                vec![msg("user", "hi")],
            )
            .unwrap();
        assert_eq!(c.title, "first chat");
        assert_eq!(c.model, "smollm2");
        assert_eq!(c.options, options);
        assert_eq!(contents(&c), ["user:hi"]);

        let got = db.get(c.id).unwrap();
        assert_eq!(got, c);

        let u = db.update(c.id, Update { title: Some("renamed".into()), ..Default::default() }).unwrap();
        assert_eq!(u.title, "renamed");
        assert_eq!(u.system, "be brief", "fields not named stay");
        assert!(u.updated_at > c.updated_at);

        db.delete(c.id).unwrap();
        assert!(matches!(db.get(c.id), Err(DbError::NotFound(_))));
        assert!(matches!(db.delete(c.id), Err(DbError::NotFound(_))));
        assert!(matches!(db.update(c.id, Update::default()), Err(DbError::NotFound(_))));
    }

    #[test]
    fn an_empty_title_becomes_new_chat() {
        let (_d, db) = db();
        assert_eq!(db.create(Update::default(), vec![]).unwrap().title, "New chat");
        let long = "x".repeat(500);
        assert_eq!(db.create(Update { title: Some(long), ..Default::default() }, vec![]).unwrap().title.len(), MAX_TITLE);
    }

    #[test]
    fn messages_append_and_replace_from_a_position() {
        let (_d, db) = db();
        let c = db.create(Update::default(), vec![msg("user", "a"), msg("assistant", "b")]).unwrap();
        let mut answer = msg("assistant", "d");
        answer.model = Some("smollm2".into());
        answer.stats = Some(json!({"ttft_ms": 12.5, "tokens_per_second": 40.0}));
        let c2 = db.set_messages(c.id, None, vec![msg("user", "c"), answer]).unwrap();
        assert_eq!(contents(&c2), ["user:a", "assistant:b", "user:c", "assistant:d"]);
        let last = c2.messages.as_ref().unwrap().last().unwrap();
        assert_eq!(last.position, 3);
        assert_eq!(last.model.as_deref(), Some("smollm2"));
        assert_eq!(last.stats, Some(json!({"ttft_ms": 12.5, "tokens_per_second": 40.0})));

        // Regenerate: the last answer replaced.
        let c3 = db.set_messages(c.id, Some(3), vec![msg("assistant", "d2")]).unwrap();
        assert_eq!(contents(&c3), ["user:a", "assistant:b", "user:c", "assistant:d2"]);
        // Edit-and-resend of the first message: everything after it goes.
        let c4 = db.set_messages(c.id, Some(0), vec![msg("user", "a2")]).unwrap();
        assert_eq!(contents(&c4), ["user:a2"]);

        let err = db.set_messages(c.id, Some(5), vec![]).unwrap_err();
        assert!(matches!(err, DbError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("has 1 messages"), "{err}");
        assert!(matches!(db.set_messages(c.id, Some(-1), vec![]), Err(DbError::Invalid(_))));
        assert!(matches!(db.set_messages(999, None, vec![]), Err(DbError::NotFound(999))));
    }

    #[test]
    fn bad_roles_are_refused_and_nothing_is_written() {
        let (_d, db) = db();
        let c = db.create(Update::default(), vec![msg("user", "a")]).unwrap();
        let err = db.set_messages(c.id, Some(0), vec![msg("user", "b"), msg("robot", "c")]).unwrap_err();
        assert!(err.to_string().contains("messages[1].role"), "{err}");
        assert_eq!(contents(&db.get(c.id).unwrap()), ["user:a"]);
        assert!(db.create(Update::default(), vec![msg("", "x")]).is_err());
    }

    #[test]
    fn deleting_a_conversation_deletes_its_messages() {
        let (dir, db) = db();
        let c = db.create(Update::default(), vec![msg("user", "a"), msg("assistant", "b")]).unwrap();
        db.delete(c.id).unwrap();
        drop(db);
        let conn = Connection::open(dir.path().join("sub").join("hearth.db")).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn list_is_newest_first_and_searches_titles_and_messages() {
        let (_d, db) = db();
        let a = db.create(Update { title: Some("Rust lifetimes".into()), ..Default::default() }, vec![msg("user", "what is 'a?")]).unwrap();
        let b = db.create(Update { title: Some("Cooking".into()), ..Default::default() }, vec![msg("user", "Pasta CARBONARA recipe")]).unwrap();
        let c = db.create(Update { title: Some("Empty".into()), ..Default::default() }, vec![]).unwrap();
        let ids = |v: Vec<Conversation>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(db.list(None, 10).unwrap()), [c.id, b.id, a.id]);
        // Touching a moves it to the top.
        db.update(a.id, Update { system: Some("s".into()), ..Default::default() }).unwrap();
        assert_eq!(ids(db.list(Some(""), 10).unwrap()), [a.id, c.id, b.id]);
        assert_eq!(ids(db.list(None, 2).unwrap()), [a.id, c.id]);
        assert_eq!(ids(db.list(Some("carbonara"), 10).unwrap()), [b.id], "message text, any case");
        assert_eq!(ids(db.list(Some("rust"), 10).unwrap()), [a.id], "title");
        assert_eq!(ids(db.list(Some("'a?"), 10).unwrap()), [a.id], "quotes and wildcards are literal");
        assert_eq!(ids(db.list(Some("%"), 10).unwrap()), Vec::<i64>::new());
        assert!(db.list(None, 10).unwrap().iter().all(|c| c.messages.is_none()), "lists carry no messages");
    }

    #[test]
    fn default_path_is_beside_the_store() {
        assert_eq!(default_path(Path::new("/home/u/.hearth/models")), Path::new("/home/u/.hearth/hearth.db"));
    }

    /// Two servers (or two handles) writing one database at once: no "database is locked"
    /// (a deferred transaction that upgrades to a write cannot wait; an immediate one does).
    #[test]
    fn two_writers_on_one_database_never_see_it_locked() {
        let (_dir, first) = db();
        let second = Arc::new(Conversations::new(first.path().to_path_buf()));
        let first = Arc::new(first);
        let id = first.create(Update::default(), vec![msg("user", "hi")]).unwrap().id;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let db = if t % 2 == 0 { first.clone() } else { second.clone() };
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            let r = if i % 2 == 0 { db.create(Update::default(), vec![msg("user", "x")]).map(drop) } else { db.set_messages(id, None, vec![msg("assistant", "y")]).map(drop) };
                            r.map_err(|e| e.to_string())
                        })
                        .filter_map(Result::err)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let errors: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert!(errors.is_empty(), "{} writes failed: {:?}", errors.len(), errors.first());
    }
}
