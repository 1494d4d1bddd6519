//! Attaching to a container's own stdio (`kubectl attach`, `kubectl run -i/-it`).
//!
//! The container's shim (see [`crate::shim`]) holds its stdin (a pipe, or the controller side
//! of its terminal) and its output, and listens on `attach.sock` in the container's state
//! directory. Each connection is one attach session, so sessions and the container's stdin
//! belong to the shim, not to the Berth process that started the container: attach keeps
//! working after `berth server` restarts.
//!
//! Frames go both ways as kind (1 byte), payload length (u32, big-endian), payload. The client
//! first sends [`HELLO`] with the streams it wants, then [`STDIN`] data, [`STDIN_CLOSE`] when
//! its input ends, and [`RESIZE`] (columns, rows as u16). The shim sends [`STDOUT`] and
//! [`STDERR`] data and closes the connection when the session ends: when the container
//! exits, or when the client's stdin ends on a container whose stdin stays open for later
//! sessions (no `stdinOnce`, or a terminal), as containerd and Docker do.
//!
//! The protocol is Berth's own (no crate speaks a shim's attach socket); both ends are here.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::{Mode, OFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crilog::Stream;
use crate::exec::{ExecReader, ExecWriter};

/// The shim's attach socket, in the container's state directory.
pub const ATTACH_SOCKET: &str = "attach.sock";

pub const HELLO: u8 = 1;
pub const STDIN: u8 = 2;
pub const STDIN_CLOSE: u8 = 3;
pub const RESIZE: u8 = 4;
pub const STDOUT: u8 = 5;
pub const STDERR: u8 = 6;

/// Frames larger than this are a protocol error.
const MAX_FRAME: usize = 1 << 20;
/// Input waiting for the container to read it; clients are not read while more is queued.
const STDIN_QUEUE: usize = 64 * 1024;
/// Output queued for one client; a client this far behind is dropped rather than allowed to
/// hold up the container's log.
const CLIENT_QUEUE: usize = 4 << 20;
/// How long the shim spends handing the last output to clients once the container ended.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// `sun_path` holds 108 bytes with its terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// Appends one frame to `out`.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut Vec<u8>) -> io::Result<Option<(u8, Vec<u8>)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes")));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

/// A directory that unix sockets are bound or reached in, even when its path is too long
/// for `sun_path`: then the socket is named through `/proc/<pid>/fd/<fd>` of an `O_PATH`
/// descriptor of the directory (the kernel resolves that link to the directory itself).
pub struct SocketDir {
    dir: PathBuf,
    fd: OwnedFd,
}

impl SocketDir {
    pub fn open(dir: &Path) -> io::Result<SocketDir> {
        let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(SocketDir { dir: dir.to_owned(), fd })
    }

    /// The name of socket `name` as the process `pid` holding this descriptor sees it.
    pub fn path_for(&self, name: &str, pid: rustix::process::Pid) -> PathBuf {
        let direct = self.dir.join(name);
        if direct.as_os_str().len() <= SUN_PATH_MAX {
            return direct;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        PathBuf::from(format!("/proc/{}/fd/{fd}/{name}", pid.as_raw_nonzero()))
    }

    /// The name of socket `name` for this process.
    pub fn path(&self, name: &str) -> PathBuf {
        self.path_for(name, rustix::process::getpid())
    }
}

/// Receives the controller side of the container's terminal, which runc sends over its
/// `--console-socket` (SCM_RIGHTS) while it creates the container (`runc run --detach`).
pub fn receive_terminal(listener: &UnixListener) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    listener.set_nonblocking(true)?;
    let (stream, _) = listener.accept()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut data = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    rustix::net::recvmsg(&stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "runc sent no terminal over the console socket"))
}

/// Sets a terminal's size; the kernel tells the foreground process group with SIGWINCH.
pub fn set_terminal_size(terminal: impl AsFd, cols: u16, rows: u16) {
    let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let _ = rustix::termios::tcsetwinsize(terminal, size);
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// What the container was started with, from its spec (`stdin`, `stdinOnce`, `tty`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdioMode {
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// One attach session as the shim sees it.
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// (stdin, stdout, stderr) once HELLO has arrived.
    wants: Option<(bool, bool, bool)>,
    /// Whether this session's stdin still feeds the container.
    stdin_open: bool,
    /// The session is over: hand it its remaining output, then close it.
    ending: bool,
}

/// The shim's side of attach: the listening socket, the sessions, and the container's stdin.
pub struct AttachServer {
    mode: StdioMode,
    listener: Option<UnixListener>,
    socket_path: Option<PathBuf>,
    clients: Vec<Client>,
    /// Where input goes: the stdin pipe's write end, or the terminal's controller side.
    stdin: Option<OwnedFd>,
    stdin_queue: Vec<u8>,
    /// `stdinOnce`: the first session's stdin ended, so the container's stdin closes once
    /// the queued input is written.
    close_stdin: bool,
    /// For resizes.
    terminal: Option<OwnedFd>,
}

/// What a descriptor in the shim's poll set stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Listener,
    Stdin,
    Client(usize),
}

impl AttachServer {
    /// Listens on `attach.sock` in `dir`. `stdin` is where input goes (absent without
    /// `stdin: true`); `terminal` is the controller side of the container's terminal.
    pub fn listen(
        dir: &SocketDir,
        mode: StdioMode,
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
    ) -> io::Result<AttachServer> {
        let path = dir.path(ATTACH_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        if let Some(fd) = &stdin {
            set_nonblocking(fd)?;
        }
        Ok(AttachServer {
            mode,
            listener: Some(listener),
            socket_path: Some(path),
            clients: Vec::new(),
            stdin,
            stdin_queue: Vec::new(),
            close_stdin: false,
            terminal,
        })
    }

    /// The descriptors to poll and for what.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut set = Vec::new();
        if let Some(listener) = &self.listener {
            set.push((listener.as_fd(), PollFlags::IN, Token::Listener));
        }
        if let Some(stdin) = &self.stdin
            && !self.stdin_queue.is_empty()
        {
            set.push((stdin.as_fd(), PollFlags::OUT, Token::Stdin));
        }
        let reading = self.stdin_queue.len() < STDIN_QUEUE;
        for (index, client) in self.clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if reading && !client.ending {
                flags |= PollFlags::IN;
            }
            if !client.output.is_empty() {
                flags |= PollFlags::OUT;
            }
            // Errors and hang-ups are reported whatever is asked for.
            set.push((client.stream.as_fd(), flags, Token::Client(index)));
        }
        set
    }

    /// Handles readiness reported by poll for `token`.
    pub fn ready(&mut self, token: Token, events: PollFlags) {
        match token {
            Token::Listener => self.accept(),
            Token::Stdin => self.write_stdin(),
            Token::Client(index) => {
                if index >= self.clients.len() {
                    return;
                }
                if events.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                    self.read_client(index);
                }
                if events.contains(PollFlags::OUT) {
                    self.write_client(index);
                }
            }
        }
    }

    /// Removes the sessions that are over. Call after handling a round of readiness.
    pub fn reap(&mut self) {
        self.clients.retain(|c| !(c.ending && c.output.is_empty()));
    }

    /// Hands container output to the sessions that asked for it.
    pub fn output(&mut self, stream: Stream, data: &[u8]) {
        let tty = self.mode.tty;
        for client in &mut self.clients {
            let Some((_, stdout, stderr)) = client.wants else { continue };
            if client.ending {
                continue;
            }
            // A terminal has one output stream, sent as stdout.
            let kind = match stream {
                Stream::Stdout if stdout => STDOUT,
                Stream::Stderr if tty && stdout => STDOUT,
                Stream::Stderr if stderr => STDERR,
                _ => continue,
            };
            encode(kind, data, &mut client.output);
            if client.output.len() > CLIENT_QUEUE {
                // Too far behind: drop it, as if it had left.
                client.output.clear();
                client.ending = true;
            }
        }
    }

    /// The container exited: accept no more sessions.
    pub fn stop_listening(&mut self) {
        self.listener = None;
        if let Some(path) = self.socket_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Gives every session its remaining output (for a bounded time), then closes them all.
    pub fn finish(mut self) {
        self.stop_listening();
        let deadline = std::time::Instant::now() + FINAL_FLUSH;
        for mut client in std::mem::take(&mut self.clients) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if client.output.is_empty() || left.is_zero() {
                continue;
            }
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.set_write_timeout(Some(left));
            let _ = client.stream.write_all(&client.output);
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Client {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                wants: None,
                stdin_open: false,
                ending: false,
            });
        }
    }

    fn read_client(&mut self, index: usize) {
        let mut buf = [0u8; 32 * 1024];
        let mut gone = false;
        {
            let client = &mut self.clients[index];
            loop {
                match client.stream.read(&mut buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        client.input.extend_from_slice(&buf[..n]);
                        if client.input.len() >= STDIN_QUEUE {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
        }
        loop {
            let frame = match decode(&mut self.clients[index].input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            };
            self.frame(index, frame);
        }
        if gone {
            self.stdin_ended(index);
            let client = &mut self.clients[index];
            client.output.clear();
            client.ending = true;
        }
    }

    fn frame(&mut self, index: usize, (kind, payload): (u8, Vec<u8>)) {
        match kind {
            HELLO if self.clients[index].wants.is_none() => {
                let flag = |i: usize| payload.get(i).is_some_and(|b| *b != 0);
                // Input is taken only if the container has a stdin that is still open.
                let stdin = flag(0) && self.stdin.is_some() && !self.close_stdin;
                let client = &mut self.clients[index];
                client.wants = Some((stdin, flag(1), flag(2)));
                client.stdin_open = stdin;
            }
            STDIN if self.clients[index].stdin_open && !self.close_stdin && self.stdin.is_some() => {
                self.stdin_queue.extend_from_slice(&payload);
                self.write_stdin();
            }
            STDIN_CLOSE => self.stdin_ended(index),
            RESIZE => {
                if let (Some(terminal), [c1, c2, r1, r2, ..]) = (&self.terminal, payload.as_slice()) {
                    set_terminal_size(terminal, u16::from_be_bytes([*c1, *c2]), u16::from_be_bytes([*r1, *r2]));
                }
            }
            _ => {}
        }
    }

    /// A session's input ended (its client closed stdin or left).
    fn stdin_ended(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if !client.stdin_open {
            return;
        }
        client.stdin_open = false;
        if self.mode.stdin_once && !self.mode.tty {
            // The container's stdin closes for good; the session goes on receiving output
            // until the container ends.
            self.close_stdin = true;
            self.write_stdin();
        } else {
            // stdin stays open for the next session; this one is over.
            client.ending = true;
        }
    }

    fn write_stdin(&mut self) {
        let Some(stdin) = &self.stdin else {
            self.stdin_queue.clear();
            return;
        };
        while !self.stdin_queue.is_empty() {
            match rustix::io::write(stdin, &self.stdin_queue) {
                Ok(n) => {
                    self.stdin_queue.drain(..n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(_) => {
                    // The container closed its stdin.
                    self.stdin_queue.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.close_stdin {
            self.stdin = None;
        }
    }

    fn write_client(&mut self, index: usize) {
        let client = &mut self.clients[index];
        while !client.output.is_empty() {
            match client.stream.write(&client.output) {
                Ok(0) => break,
                Ok(n) => {
                    client.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    client.output.clear();
                    client.ending = true;
                    if client.stdin_open {
                        self.stdin_ended(index);
                    }
                    return;
                }
            }
        }
    }
}

/// The streams an attach session asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachRequest {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A session with a container's shim, from Berth's side.
pub struct AttachSession {
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    pub stderr: Option<ExecReader>,
    resize: tokio::sync::mpsc::UnboundedSender<(u16, u16)>,
    done: tokio::sync::oneshot::Receiver<()>,
    cancel: tokio::sync::oneshot::Sender<()>,
}

impl AttachSession {
    /// A handle that resizes the container's terminal.
    pub fn resizer(&self) -> impl Fn(u16, u16) + Send + Sync + 'static {
        let tx = self.resize.clone();
        move |cols, rows| {
            let _ = tx.send((cols, rows));
        }
    }

    /// Resolves when the shim ends the session; dropping it ends the session.
    pub fn wait(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let AttachSession { done, cancel, .. } = self;
        async move {
            let _cancel = cancel;
            let _ = done.await;
        }
    }

    /// Takes the streams out, leaving the session to be waited on.
    pub fn take_streams(&mut self) -> (Option<ExecWriter>, Option<ExecReader>, Option<ExecReader>) {
        (self.stdin.take(), self.stdout.take(), self.stderr.take())
    }
}

/// Connects to the shim of the container whose state is in `state_dir`. Fails with
/// `NotFound` if the shim serves no attach socket (it was started by an older Berth) and
/// with `ConnectionRefused` if the container has ended. Must be called in a tokio runtime.
pub fn connect(state_dir: &Path, request: AttachRequest) -> io::Result<AttachSession> {
    let dir = SocketDir::open(state_dir)?;
    let mut stream = UnixStream::connect(dir.path(ATTACH_SOCKET))?;
    let mut hello = Vec::new();
    encode(HELLO, &[u8::from(request.stdin), u8::from(request.stdout), u8::from(request.stderr)], &mut hello);
    stream.write_all(&hello)?;
    stream.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(stream)?;

    let (stdin_writer, stdin_reader) = if request.stdin {
        let (w, r) = tokio::io::duplex(64 * 1024);
        (Some(Box::pin(w) as ExecWriter), Some(r))
    } else {
        (None, None)
    };
    let pipe = |wanted: bool| {
        if wanted {
            let (w, r) = tokio::io::duplex(64 * 1024);
            (Some(w), Some(Box::pin(r) as ExecReader))
        } else {
            (None, None)
        }
    };
    let (stdout_writer, stdout) = pipe(request.stdout);
    let (stderr_writer, stderr) = pipe(request.stderr);
    let (resize, resize_rx) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (cancel, cancel_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        pump(socket, stdin_reader, stdout_writer, stderr_writer, resize_rx, cancel_rx).await;
        let _ = done_tx.send(());
    });
    Ok(AttachSession { stdin: stdin_writer, stdout, stderr, resize, done, cancel })
}

/// Moves frames between the shim's socket and the session's streams until the shim closes
/// the connection, the caller's outputs go away, or the session is dropped.
async fn pump(
    socket: tokio::net::UnixStream,
    mut stdin: Option<tokio::io::DuplexStream>,
    mut stdout: Option<tokio::io::DuplexStream>,
    mut stderr: Option<tokio::io::DuplexStream>,
    mut resize: tokio::sync::mpsc::UnboundedReceiver<(u16, u16)>,
    mut cancel: tokio::sync::oneshot::Receiver<()>,
) {
    let (mut from_shim, mut to_shim) = socket.into_split();
    let mut incoming = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    let mut input = vec![0u8; 32 * 1024];
    let mut frame = Vec::new();
    loop {
        frame.clear();
        tokio::select! {
            _ = &mut cancel => return,
            read = from_shim.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                incoming.extend_from_slice(&chunk[..n]);
                while let Ok(Some((kind, payload))) = decode(&mut incoming) {
                    let out = match kind {
                        STDOUT => stdout.as_mut(),
                        STDERR => stderr.as_mut(),
                        _ => None,
                    };
                    if let Some(out) = out
                        && out.write_all(&payload).await.is_err()
                    {
                        // The caller stopped reading: the client is gone.
                        return;
                    }
                }
            }
            read = async {
                match stdin.as_mut() {
                    Some(r) => r.read(&mut input).await,
                    None => std::future::pending().await,
                }
            } => {
                match read {
                    Ok(0) | Err(_) => {
                        stdin = None;
                        encode(STDIN_CLOSE, &[], &mut frame);
                    }
                    Ok(n) => encode(STDIN, &input[..n], &mut frame),
                }
            }
            Some((cols, rows)) = resize.recv() => {
                let mut size = cols.to_be_bytes().to_vec();
                size.extend_from_slice(&rows.to_be_bytes());
                encode(RESIZE, &size, &mut frame);
            }
        }
        if !frame.is_empty() && to_shim.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// The output queued for each session (for tests of the fan-out).
#[cfg(test)]
fn pending(server: &AttachServer) -> Vec<Vec<u8>> {
    server.clients.iter().map(|c| c.output.clone()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_end() {
        let mut buf = Vec::new();
        encode(STDIN, b"hello", &mut buf);
        encode(RESIZE, &[0, 80, 0, 24], &mut buf);
        let mut partial = buf[..7].to_vec();
        assert_eq!(decode(&mut partial).unwrap(), None);
        assert_eq!(decode(&mut buf).unwrap(), Some((STDIN, b"hello".to_vec())));
        assert_eq!(decode(&mut buf).unwrap(), Some((RESIZE, vec![0, 80, 0, 24])));
        assert!(buf.is_empty());
        let mut huge = vec![STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(decode(&mut huge).is_err());
    }

    #[test]
    fn long_directories_are_reached_through_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let long = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&long).unwrap();
        let dir = SocketDir::open(&long).unwrap();
        let path = dir.path(ATTACH_SOCKET);
        assert!(path.starts_with("/proc/"), "{}", path.display());
        let listener = UnixListener::bind(&path).unwrap();
        assert!(long.join(ATTACH_SOCKET).exists());
        let _client = UnixStream::connect(dir.path(ATTACH_SOCKET)).unwrap();
        assert!(listener.accept().is_ok());
        let short = SocketDir::open(tmp.path()).unwrap();
        assert_eq!(short.path("x.sock"), tmp.path().join("x.sock"));
    }

    /// Runs the server's side of one poll round for every ready descriptor.
    fn turn(server: &mut AttachServer) {
        let ready: Vec<(Token, PollFlags)> = {
            let set = server.poll_set();
            let mut fds: Vec<rustix::event::PollFd<'_>> =
                set.iter().map(|(fd, flags, _)| rustix::event::PollFd::from_borrowed_fd(*fd, *flags)).collect();
            let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
            rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
            fds.iter().zip(&set).filter(|(fd, _)| !fd.revents().is_empty()).map(|(fd, s)| (s.2, fd.revents())).collect()
        };
        for (token, events) in ready {
            server.ready(token, events);
        }
        server.reap();
    }

    fn server(mode: StdioMode) -> (tempfile::TempDir, AttachServer, Option<std::fs::File>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SocketDir::open(tmp.path()).unwrap();
        let (read, write) = rustix::pipe::pipe().unwrap();
        let server = AttachServer::listen(&dir, mode, mode.stdin.then_some(write), None).unwrap();
        (tmp, server, mode.stdin.then(|| std::fs::File::from(read)))
    }

    fn client(tmp: &Path, stdin: bool) -> UnixStream {
        let mut stream = UnixStream::connect(tmp.join(ATTACH_SOCKET)).unwrap();
        let mut hello = Vec::new();
        encode(HELLO, &[u8::from(stdin), 1, 1], &mut hello);
        stream.write_all(&hello).unwrap();
        stream
    }

    #[test]
    fn input_reaches_the_container_and_output_reaches_sessions() {
        let (tmp, mut server, container_stdin) = server(StdioMode { stdin: true, ..Default::default() });
        let mut container_stdin = container_stdin.unwrap();
        let mut session = client(tmp.path(), true);
        let mut frame = Vec::new();
        encode(STDIN, b"typed\n", &mut frame);
        session.write_all(&frame).unwrap();
        for _ in 0..4 {
            turn(&mut server);
        }
        let mut got = [0u8; 6];
        container_stdin.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"typed\n");

        server.output(Stream::Stderr, b"oops");
        assert_eq!(pending(&server).len(), 1);
        turn(&mut server);
        let mut reply = Vec::new();
        let mut buf = [0u8; 64];
        session.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while decode(&mut reply.clone()).unwrap().is_none() {
            let n = session.read(&mut buf).unwrap();
            reply.extend_from_slice(&buf[..n]);
        }
        assert_eq!(decode(&mut reply).unwrap(), Some((STDERR, b"oops".to_vec())));

        // Without stdinOnce, the end of a session's input ends the session but leaves the
        // container's stdin open for the next one.
        let mut close = Vec::new();
        encode(STDIN_CLOSE, &[], &mut close);
        session.write_all(&close).unwrap();
        for _ in 0..3 {
            turn(&mut server);
        }
        assert_eq!(session.read(&mut buf).unwrap(), 0, "the session is closed");
        assert!(server.stdin.is_some());
    }

    #[test]
    fn stdin_once_closes_the_containers_stdin_after_the_first_session() {
        let (tmp, mut server, container_stdin) = server(StdioMode { stdin: true, stdin_once: true, tty: false });
        let mut container_stdin = container_stdin.unwrap();
        let mut session = client(tmp.path(), true);
        let mut frames = Vec::new();
        encode(STDIN, b"last words\n", &mut frames);
        encode(STDIN_CLOSE, &[], &mut frames);
        session.write_all(&frames).unwrap();
        for _ in 0..4 {
            turn(&mut server);
        }
        let mut all = String::new();
        container_stdin.read_to_string(&mut all).unwrap();
        assert_eq!(all, "last words\n", "the container read its input, then end-of-file");
        // The session still receives output.
        server.output(Stream::Stdout, b"bye");
        turn(&mut server);
        let mut buf = [0u8; 16];
        session.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = session.read(&mut buf).unwrap();
        assert_eq!(&buf[5..n], b"bye");
    }
}
