//! moto's server mode on loopback: started as a child process, killed with us.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error("moto not found (looked at $MOTO_SERVER and {0}): run `make test` or `make dev`, which install it into .venv from infra/requirements.txt")]
    NotInstalled(String),
    #[error("moto_server could not be started: {0}")]
    Spawn(String),
    #[error(
        "moto_server did not become ready on {endpoint} within {secs}s; its output:\n{output}"
    )]
    NotReady {
        endpoint: String,
        secs: u64,
        output: String,
    },
}

pub struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Result<Moto, MotoError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| MotoError::Spawn(e.to_string()))?;
        Moto::start_on(port)
    }

    pub fn start_on(port: u16) -> Result<Moto, MotoError> {
        let (bin, launcher) = find_binary()?;
        let log = std::env::temp_dir().join(format!("moto-{port}-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).map_err(|e| MotoError::Spawn(e.to_string()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| MotoError::Spawn(e.to_string()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill moto if our spawning thread dies,
        // so no moto outlives a crashed test run or dev session.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| MotoError::Spawn(format!("{}: {e}", bin.display())))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(MotoError::NotReady {
                    endpoint,
                    secs: started.elapsed().as_secs(),
                    output: format!("(exited with {status})\n{}", tail(&log)),
                });
            }
            if answers(port) {
                return Ok(Moto { child, endpoint });
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                return Err(MotoError::NotReady {
                    endpoint,
                    secs: limit.as_secs(),
                    output: tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The test binary's motos, started together on first use and killed when the process exits:
    /// `$MOTO_SERVERS` of them (default: one per CPU, plus one). moto serves one request at a time
    /// (Python's GIL), so tests spread over several use every core; each test's tables live in one.
    pub fn pool() -> Result<&'static [Moto], String> {
        static POOL: OnceLock<Result<Vec<Moto>, String>> = OnceLock::new();
        POOL.get_or_init(|| {
            let n = std::env::var("MOTO_SERVERS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .or_else(|| {
                    std::thread::available_parallelism()
                        .ok()
                        .map(|n| n.get() + 1)
                })
                .unwrap_or(1)
                .max(1);
            let (tx, rx) = mpsc::channel();
            for _ in 0..n {
                let tx = tx.clone();
                // Each spawning thread must outlive the tests: its moto dies with it (PR_SET_PDEATHSIG).
                std::thread::spawn(move || {
                    let _ = tx.send(Moto::start().map_err(|e| e.to_string()));
                    loop {
                        std::thread::park();
                    }
                });
            }
            drop(tx);
            rx.iter()
                .take(n)
                .collect::<Result<Vec<_>, _>>()
                .and_then(|motos| {
                    (motos.len() == n)
                        .then_some(motos)
                        .ok_or_else(|| "a moto starter thread died".to_owned())
                })
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What runs moto: `$MOTO_SERVER` as given, else the project's launcher (`moto_server.py`: DynamoDB's
/// writes atomic, as in AWS) on the virtualenv's Python.
fn find_binary() -> Result<(PathBuf, Vec<String>), MotoError> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Ok((PathBuf::from(p), Vec::new()));
    }
    let root = crate::workspace_root();
    let python = root.join(".venv/bin/python");
    if python.exists() {
        let launcher = root.join("infra/local/moto_server.py");
        return Ok((python, vec![launcher.display().to_string()]));
    }
    Err(MotoError::NotInstalled(python.display().to_string()))
}

fn answers(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1."))
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
