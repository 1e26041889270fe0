//! Logging to stderr or `logFile`, never stdout (stdout carries only the result JSON).

use crate::config::LogLevel;
use std::io::Write;
use std::sync::Mutex;

struct Sink {
    level: LogLevel,
    file: Option<std::fs::File>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    level: LogLevel::Info,
    file: None,
});

/// Set the level and, optionally, a file to append to (stderr otherwise).
pub fn init(level: LogLevel, file: Option<&std::path::Path>) {
    let f = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    if let Ok(mut s) = SINK.lock() {
        s.level = level;
        s.file = f;
    }
}

/// Write one line at `level`.
pub fn log(level: LogLevel, msg: std::fmt::Arguments<'_>) {
    let Ok(mut s) = SINK.lock() else { return };
    if level > s.level {
        return;
    }
    let tag = match level {
        LogLevel::Error => "error",
        LogLevel::Warning => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = format!("{ts:.3} sriov[{}] {tag}: {msg}\n", std::process::id());
    match s.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Log at info.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Info, format_args!($($t)*)) } }
/// Log at debug.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Debug, format_args!($($t)*)) } }
/// Log at warning.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Warning, format_args!($($t)*)) } }
