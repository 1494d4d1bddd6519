//! Container logs in the CRI format kubelet reads (`<RFC3339Nano> <stream> <P|F> <content>`),
//! one file per container attempt at `<data-dir>/pods/<uid>/<container>/<restartCount>.log`.
//! The shim writes them; the API server reads them through [`read_log`] and friends.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest line written as one record; longer ones are split into partial (`P`) records,
/// as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Turns raw output chunks into CRI log records.
pub struct CriLogWriter<W: Write> {
    out: W,
    pending: [Vec<u8>; 2],
}

impl<W: Write> CriLogWriter<W> {
    pub fn new(out: W) -> Self {
        CriLogWriter { out, pending: [Vec::new(), Vec::new()] }
    }

    /// Appends output of `stream`; complete lines are written at once, stamped `now`.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: Timestamp) -> io::Result<()> {
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(newline);
            self.spill(stream, line, now)?;
            let full = std::mem::take(&mut self.pending[stream.index()]);
            self.record(stream, false, &full, now)?;
            rest = &after[1..];
        }
        self.spill(stream, rest, now)?;
        self.out.flush()
    }

    /// Buffers an incomplete line, writing `P` records while it exceeds [`MAX_LINE`];
    /// a line that ends exactly at a limit still gets its final `F` record.
    fn spill(&mut self, stream: Stream, mut data: &[u8], now: Timestamp) -> io::Result<()> {
        loop {
            let pending = &mut self.pending[stream.index()];
            let room = MAX_LINE - pending.len();
            if data.len() <= room {
                pending.extend_from_slice(data);
                return Ok(());
            }
            pending.extend_from_slice(&data[..room]);
            data = &data[room..];
            let chunk = std::mem::take(pending);
            self.record(stream, true, &chunk, now)?;
        }
    }

    /// Writes what is left of an unterminated last line (the stream ended).
    pub fn finish(&mut self, stream: Stream, now: Timestamp) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if !pending.is_empty() {
            self.record(stream, false, &pending, now)?;
        }
        self.out.flush()
    }

    fn record(&mut self, stream: Stream, partial: bool, content: &[u8], now: Timestamp) -> io::Result<()> {
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(content.len() + 48);
        write!(line, "{} {} {tag} ", format_timestamp(now), stream.as_str())?;
        line.extend_from_slice(content);
        line.push(b'\n');
        self.out.write_all(&line)
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC (Go's `RFC3339Nano`).
pub fn format_timestamp(ts: Timestamp) -> String {
    let text = format!("{ts:.9}");
    // "…:05.120000000Z" -> "…:05.12Z"; "…:05.000000000Z" -> "…:05Z".
    match text.strip_suffix('Z').and_then(|body| body.split_once('.')) {
        Some((seconds, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() { format!("{seconds}Z") } else { format!("{seconds}.{fraction}Z") }
        }
        None => text,
    }
}

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?.parse::<Timestamp>().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogRecord { timestamp, stream, partial, content: fields.next().unwrap_or_default().to_vec() })
}

/// Where the log of attempt `restart_count` of a container goes.
pub fn log_path(data_dir: &Path, pod_uid: &str, container: &str, restart_count: u32) -> PathBuf {
    data_dir.join("pods").join(pod_uid).join(container).join(format!("{restart_count}.log"))
}

/// The log files of a container, oldest attempt first.
pub fn log_files(data_dir: &Path, pod_uid: &str, container: &str) -> io::Result<Vec<(u32, PathBuf)>> {
    let dir = data_dir.join("pods").join(pod_uid).join(container);
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(attempt) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u32>().ok()) {
            files.push((attempt, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Log rotation of the files the shim writes, as kubelet's `containerLogMaxSize` and
/// `containerLogMaxFiles` (same defaults: 10 MiB, 5 files counting the live one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub max_bytes: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, max_files: 5 }
    }
}

/// The rotated files of the log at `path` (`<attempt>.log.<n>`), oldest first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{base}.");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name.to_str()?.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    files.sort();
    files
}

/// Removes a container attempt's log with its rotated files.
pub fn remove_log(path: &Path) {
    for (_, rotated) in rotated_files(path) {
        let _ = std::fs::remove_file(rotated);
    }
    let _ = std::fs::remove_file(path);
}

/// A log file that the shim appends to, rotated by size: when a record would take the live
/// file past `max_bytes`, it is renamed to `<name>.<n+1>` and a new one started; only the
/// newest `max_files - 1` rotated files are kept. Records are written whole (one
/// `write_all`), so a rotation never splits one.
pub struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    next: u64,
    rotation: Rotation,
}

impl RotatingFile {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let next = rotated_files(path).last().map_or(1, |(n, _)| n + 1);
        Ok(RotatingFile { path: path.to_owned(), file, size, next, rotation })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut rotated = self.path.as_os_str().to_owned();
        rotated.push(format!(".{}", self.next));
        std::fs::rename(&self.path, &rotated)?;
        self.next += 1;
        self.file = std::fs::File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        let keep = self.rotation.max_files.saturating_sub(1) as usize;
        let old = rotated_files(&self.path);
        for (_, path) in old.iter().take(old.len().saturating_sub(keep)) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.rotation.max_bytes {
            // A failed rotation keeps writing to the live file rather than losing output.
            if let Err(error) = self.rotate() {
                eprintln!("rotating {}: {error}", self.path.display());
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What `kubectl logs` may ask for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// One line of container output, its partial records joined.
type Line = (Timestamp, Vec<u8>);

/// Turns CRI log bytes, fed in any pieces, into whole lines.
#[derive(Default)]
struct LineParser {
    buf: Vec<u8>,
    partial: [Option<Line>; 2],
}

impl LineParser {
    fn feed(&mut self, data: &[u8], lines: &mut Vec<Line>) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let raw = &self.buf[start..start + end];
            start += end + 1;
            let Some(record) = parse_record(raw) else { continue };
            let slot = &mut self.partial[record.stream.index()];
            let (first_ts, mut content) = slot.take().unwrap_or((record.timestamp, Vec::new()));
            content.extend_from_slice(&record.content);
            if record.partial {
                *slot = Some((first_ts, content));
            } else {
                lines.push((first_ts, content));
            }
        }
        self.buf.drain(..start);
    }
}

fn render(lines: Vec<Line>, options: &LogOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for (ts, content) in lines {
        if options.since.is_some_and(|since| ts < since) {
            continue;
        }
        if options.timestamps {
            out.extend_from_slice(format_timestamp(ts).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&content);
        out.push(b'\n');
    }
    out
}

fn apply_tail_and_limit(mut lines: Vec<Line>, options: &LogOptions) -> Vec<u8> {
    if let Some(since) = options.since {
        lines.retain(|(ts, _)| *ts >= since);
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut out = render(lines, options);
    if let Some(limit) = options.limit_bytes {
        out.truncate(limit);
    }
    out
}

fn read_into(parser: &mut LineParser, file: &mut std::fs::File, lines: &mut Vec<Line>) -> io::Result<usize> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = io::Read::read(file, &mut chunk)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        parser.feed(&chunk[..n], lines);
    }
}

/// Reads the log of one container attempt (its rotated files, then the live file at `path`)
/// and renders it as `kubectl logs` prints it: partial records joined, both streams
/// interleaved in order.
pub fn read_log(path: &Path, options: &LogOptions) -> io::Result<Vec<u8>> {
    Ok(LogFollower::open(path, options)?.0)
}

/// Follows a container attempt's log as it is written (`kubectl logs -f`), also across
/// rotations: the open file is read to its end before the new live file is opened.
pub struct LogFollower {
    path: PathBuf,
    file: std::fs::File,
    parser: LineParser,
    options: LogOptions,
    /// Bytes still allowed by `limit_bytes`.
    budget: Option<usize>,
}

impl LogFollower {
    /// What the log holds now, `options` applied, and a follower for what comes next.
    pub fn open(path: &Path, options: &LogOptions) -> io::Result<(Vec<u8>, LogFollower)> {
        let mut parser = LineParser::default();
        let mut lines = Vec::new();
        for (_, rotated) in rotated_files(path) {
            // A rotated file removed meanwhile only loses old lines.
            if let Ok(mut file) = std::fs::File::open(&rotated) {
                read_into(&mut parser, &mut file, &mut lines)?;
            }
        }
        let mut file = std::fs::File::open(path)?;
        read_into(&mut parser, &mut file, &mut lines)?;
        let first = apply_tail_and_limit(lines, options);
        let budget = options.limit_bytes.map(|limit| limit.saturating_sub(first.len()));
        let options = LogOptions { tail_lines: None, ..options.clone() };
        Ok((first, LogFollower { path: path.to_owned(), file, parser, options, budget }))
    }

    /// Lines written since the last call (empty if none). After a rotation the rest of the
    /// old file comes first, then the new live file's.
    pub fn read_new(&mut self) -> io::Result<Vec<u8>> {
        let mut lines = Vec::new();
        if read_into(&mut self.parser, &mut self.file, &mut lines)? == 0 {
            use std::os::unix::fs::MetadataExt;
            let rotated = match (std::fs::metadata(&self.path), self.file.metadata()) {
                (Ok(now), Ok(open)) => now.ino() != open.ino(),
                _ => false,
            };
            if rotated {
                read_into(&mut self.parser, &mut self.file, &mut lines)?;
                self.file = std::fs::File::open(&self.path)?;
                read_into(&mut self.parser, &mut self.file, &mut lines)?;
            }
        }
        let mut out = render(lines, &self.options);
        if let Some(budget) = self.budget.as_mut() {
            out.truncate(*budget);
            *budget -= out.len();
        }
        Ok(out)
    }

    /// Whether `limit_bytes` has been reached.
    pub fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn timestamps_look_like_go_rfc3339nano() {
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30.123456789Z")), "2024-05-01T10:20:30.123456789Z");
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30.12Z")), "2024-05-01T10:20:30.12Z");
        assert_eq!(format_timestamp(ts("2024-05-01T10:20:30Z")), "2024-05-01T10:20:30Z");
    }

    #[test]
    fn lines_become_full_records_and_split_writes_join() {
        let now = ts("2024-05-01T10:20:30.5Z");
        let mut writer = CriLogWriter::new(Vec::new());
        writer.write(Stream::Stdout, b"hello\nwor", now).unwrap();
        writer.write(Stream::Stderr, b"oops\n", now).unwrap();
        writer.write(Stream::Stdout, b"ld\n\nlast", now).unwrap();
        writer.finish(Stream::Stdout, now).unwrap();
        let text = String::from_utf8(writer.out).unwrap();
        assert_eq!(
            text,
            "2024-05-01T10:20:30.5Z stdout F hello\n\
             2024-05-01T10:20:30.5Z stderr F oops\n\
             2024-05-01T10:20:30.5Z stdout F world\n\
             2024-05-01T10:20:30.5Z stdout F \n\
             2024-05-01T10:20:30.5Z stdout F last\n"
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_records_and_rejoined() {
        let now = ts("2024-05-01T10:20:30Z");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        {
            let mut writer = CriLogWriter::new(std::fs::File::create(&path).unwrap());
            writer.write(Stream::Stdout, &long, now).unwrap();
            writer.write(Stream::Stdout, b"\nshort\n", now).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        let records: Vec<_> =
            raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse_record(l).unwrap()).collect();
        assert_eq!(records.iter().map(|r| r.partial).collect::<Vec<_>>(), vec![true, true, false, false]);
        assert!(records.iter().all(|r| r.content.len() <= MAX_LINE));

        let rendered = read_log(&path, &LogOptions::default()).unwrap();
        let mut expected = long.clone();
        expected.extend_from_slice(b"\nshort\n");
        assert_eq!(rendered, expected);

        let tail =
            read_log(&path, &LogOptions { tail_lines: Some(1), timestamps: true, ..Default::default() }).unwrap();
        assert_eq!(tail, b"2024-05-01T10:20:30Z short\n");
    }

    #[test]
    fn log_files_are_listed_by_attempt() {
        let dir = tempfile::tempdir().unwrap();
        for attempt in [10, 2, 0] {
            let path = log_path(dir.path(), "uid-1", "web", attempt);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        }
        let attempts: Vec<u32> = log_files(dir.path(), "uid-1", "web").unwrap().into_iter().map(|(a, _)| a).collect();
        assert_eq!(attempts, vec![0, 2, 10]);
        assert!(log_files(dir.path(), "uid-1", "missing").unwrap().is_empty());
    }

    #[test]
    fn rotation_keeps_a_few_files_and_readers_see_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let now = ts("2024-05-01T10:20:30Z");
        let rotation = Rotation { max_bytes: 200, max_files: 3 };
        let mut writer = CriLogWriter::new(RotatingFile::open(&path, rotation).unwrap());
        let (first, mut follower) = LogFollower::open(&path, &LogOptions::default()).unwrap();
        assert!(first.is_empty());
        let mut followed = Vec::new();
        for i in 0..40 {
            writer.write(Stream::Stdout, format!("line {i}\n").as_bytes(), now).unwrap();
            // The follower keeps up across rotations as long as it reads before a rotated
            // file is removed.
            followed.extend(follower.read_new().unwrap());
        }
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        let expected: String = (0..40).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(followed).unwrap(), expected);

        // A fresh read sees only what the kept files hold, oldest first, ending with the last line.
        let all = String::from_utf8(read_log(&path, &LogOptions::default()).unwrap()).unwrap();
        assert!(all.ends_with("line 39\n") && !all.contains("line 0\n"), "{all}");
        assert!(expected.ends_with(&all));
        let tail = read_log(&path, &LogOptions { tail_lines: Some(2), ..Default::default() }).unwrap();
        assert_eq!(tail, b"line 38\nline 39\n");

        remove_log(&path);
        assert!(rotated_files(&path).is_empty() && !path.exists());
    }

    #[test]
    fn follower_honours_since_and_limit_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut writer = CriLogWriter::new(RotatingFile::open(&path, Rotation::default()).unwrap());
        writer.write(Stream::Stdout, b"old\n", ts("2024-05-01T10:00:00Z")).unwrap();
        writer.write(Stream::Stderr, b"new\n", ts("2024-05-01T11:00:00Z")).unwrap();
        let options = LogOptions {
            since: Some(ts("2024-05-01T10:30:00Z")),
            timestamps: true,
            limit_bytes: Some(40),
            ..Default::default()
        };
        let (first, mut follower) = LogFollower::open(&path, &options).unwrap();
        assert_eq!(first, b"2024-05-01T11:00:00Z new\n");
        writer.write(Stream::Stdout, b"0123456789abcdefghij\n", ts("2024-05-01T11:00:01Z")).unwrap();
        let next = follower.read_new().unwrap();
        assert_eq!(next.len(), 40 - first.len());
        assert!(follower.exhausted());
    }
}
