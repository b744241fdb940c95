//! What the core crate's integration tests share: real redis-server and memcached processes,
//! each on a free loopback port of its own, stopped when dropped. A missing binary skips the
//! test with a note, and fails it under CI=true.
//!
//! Every server is made unconfusable: tests run in parallel and may pick the same free port, so
//! a server counts as started only when the process answering on the port reports the pid of
//! the child we spawned; a child that exits (its port was taken) is retried on another port.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT_ATTEMPTS: usize = 5;
/// How long a started server may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a cluster's nodes may take to agree that every slot is served.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// One server process of our own.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a missing `binary` skips the test: never under CI=true, where it fails it.
fn skip_missing(binary: &str, error: &std::io::Error) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{binary} missing under CI: {error}"
    );
    eprintln!("skipped: {binary} is not installed");
}

/// Starts `binary` with `args(port)` on `port` and waits until the process answering there (as
/// `pid_at` asks it) is the one started: `Ok(None)` when it exited first (the port was taken),
/// `Err` when the binary is not installed.
fn spawn_on(
    binary: &str,
    port: u16,
    args: &dyn Fn(u16) -> Vec<String>,
    pid_at: &dyn Fn(u16) -> Option<u32>,
) -> std::io::Result<Option<Server>> {
    let child = Command::new(binary)
        .args(args(port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut server = Server { child, port };
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if server.child.try_wait().unwrap().is_some() {
            server.stop();
            return Ok(None);
        }
        if pid_at(port) == Some(server.child.id()) {
            return Ok(Some(server));
        }
        assert!(Instant::now() < deadline, "{binary} did not answer");
        std::thread::sleep(POLL);
    }
}

/// `binary` started on a free port; `None` when it is not installed.
fn start(
    binary: &str,
    args: &dyn Fn(u16) -> Vec<String>,
    pid_at: &dyn Fn(u16) -> Option<u32>,
) -> Option<Server> {
    for _ in 0..PORT_ATTEMPTS {
        match spawn_on(binary, free_port(), args, pid_at) {
            Ok(Some(server)) => return Some(server),
            Ok(None) => {} // exited: most likely the port was taken meanwhile; try another
            Err(e) => {
                skip_missing(binary, &e);
                return None;
            }
        }
    }
    panic!("{binary} could not start on {PORT_ATTEMPTS} free ports");
}

/// Sends `request` and reads until the answer ends with `end`, with short timeouts.
pub fn ask(port: u16, request: &[u8], end: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(end) {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8(answer).ok()
}

/// The pid of the redis-server on `port`, asked inline (logging in first when it wants a
/// password).
pub fn redis_pid(port: u16, password: Option<&str>) -> Option<u32> {
    let auth = password.map_or(String::new(), |pw| format!("AUTH {pw}\r\n"));
    // The inline `INFO server` answer is one bulk string; its last line ends with "\r\n\r\n".
    let info = ask(
        port,
        format!("{auth}INFO server\r\n").as_bytes(),
        b"\r\n\r\n",
    )?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

fn redis_args(port: u16, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(extra);
    args
}

/// A redis-server of its own; `None` when it is not installed.
pub fn redis() -> Option<Server> {
    start("redis-server", &|port| redis_args(port, &[]), &|port| {
        redis_pid(port, None)
    })
}

/// A redis-server that wants `password` (`--requirepass`).
pub fn redis_with_password(password: &str) -> Option<Server> {
    let extra = ["--requirepass".to_owned(), password.to_owned()];
    start("redis-server", &|port| redis_args(port, &extra), &|port| {
        redis_pid(port, Some(password))
    })
}

/// A command to the redis-server on `port`, for what the stores do not expose (TTL, CLUSTER,
/// keys of another type).
pub fn redis_command(port: u16, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection).unwrap()
}

/// A Redis Cluster of its own: masters only, the slots split evenly between them.
pub struct RedisCluster {
    pub nodes: Vec<Server>,
    /// The nodes' cluster config files.
    _folder: tempfile::TempDir,
}

impl RedisCluster {
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::redis_url).collect()
    }

    pub fn stop(&mut self) {
        self.nodes.iter_mut().for_each(Server::stop);
    }
}

fn cluster_state_ok(port: u16) -> bool {
    match redis_command(port, &["CLUSTER", "INFO"]) {
        redis::Value::BulkString(info) => String::from_utf8_lossy(&info)
            .lines()
            .any(|line| line.trim() == "cluster_state:ok"),
        redis::Value::VerbatimString { text, .. } => {
            text.lines().any(|line| line.trim() == "cluster_state:ok")
        }
        _ => false,
    }
}

/// `masters` cluster-enabled redis-servers joined into one cluster, answering once every node
/// says the cluster is ok (Redis holds a new cluster down for about two seconds, so this costs
/// that much: one cluster serves a whole test); `None` when redis-server is not installed.
pub fn redis_cluster(masters: u16) -> Option<RedisCluster> {
    let folder = tempfile::tempdir().unwrap();
    let config = |port: u16| folder.path().join(format!("nodes-{port}.conf"));
    let mut nodes = Vec::new();
    for _ in 0..masters {
        let args = |port: u16| {
            let extra = [
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                path_arg(&config(port)),
            ];
            redis_args(port, &extra)
        };
        nodes.push(start("redis-server", &args, &|port| redis_pid(port, None))?);
    }
    let slots_each = 16384 / u32::from(masters);
    for (n, node) in nodes.iter().enumerate() {
        let first = slots_each * n as u32;
        let last = if n + 1 == nodes.len() {
            16383
        } else {
            first + slots_each - 1
        };
        let (first, last) = (first.to_string(), last.to_string());
        redis_command(node.port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]);
    }
    for node in &nodes[1..] {
        let port = node.port.to_string();
        redis_command(nodes[0].port, &["CLUSTER", "MEET", "127.0.0.1", &port]);
    }
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    while !nodes.iter().all(|node| cluster_state_ok(node.port)) {
        assert!(Instant::now() < deadline, "the cluster did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(RedisCluster {
        nodes,
        _folder: folder,
    })
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a temporary path is UTF-8").to_owned()
}

pub fn memcached_pid(port: u16) -> Option<u32> {
    let stats = ask(port, b"stats\r\n", b"END\r\n")?;
    stats
        .lines()
        .find_map(|line| line.strip_prefix("STAT pid "))
        .and_then(|pid| pid.trim().parse().ok())
}

fn memcached_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    ["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"]
        .map(String::from)
        .to_vec()
}

/// A memcached of its own; `None` when it is not installed.
pub fn memcached() -> Option<Server> {
    start("memcached", &memcached_args, &memcached_pid)
}

/// memcached again on the port of one that was stopped (it binds with SO_REUSEADDR).
pub fn memcached_restarted(port: u16) -> Server {
    spawn_on("memcached", port, &memcached_args, &memcached_pid)
        .unwrap()
        .unwrap_or_else(|| panic!("memcached did not come back on {port}"))
}
