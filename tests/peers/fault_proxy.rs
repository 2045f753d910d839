//! A test-side HTTP/1.1 proxy in front of a real registry that injects the
//! faults a healthy registry never produces on demand: 500s, 429s with and
//! without `Retry-After`, connection resets (RST, SO_LINGER 0), and any
//! other status (a 401/403/404 refusing a mount, as other registries do). Each
//! connection carries exactly one request (`Connection: close` is forced
//! both ways), so every request gets its own fault decision. A mock only
//! for the faults: every other request reaches the real registry unchanged.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Status500,
    TooMany {
        retry_after: Option<u32>,
    },
    Reset,
    /// Any other status (401, 403, 404, ...), with an empty OCI error list.
    Status(u16),
}

type Plan = dyn Fn(usize, &str) -> Fault + Send + Sync;

pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Every fault injected, with the request line it answered.
    pub injected: Arc<Mutex<Vec<(Fault, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:<free port> to 127.0.0.1:`upstream`; `plan(n,
    /// request line)` decides the fate of the n-th request (from 0).
    pub fn start(
        upstream: u16,
        plan: impl Fn(usize, &str) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free 127.0.0.1 port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(Mutex::new(Vec::new()));
        let plan: Arc<Plan> = Arc::new(plan);
        let counter = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, injected) = (Arc::clone(&stop), Arc::clone(&injected));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (plan, injected, counter) = (
                        Arc::clone(&plan),
                        Arc::clone(&injected),
                        Arc::clone(&counter),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(stream, upstream, &*plan, &injected, &counter);
                    });
                }
            })
        };
        FaultProxy {
            port,
            stop,
            injected,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many faults of each kind were injected: (500, 429 with
    /// Retry-After, 429 without, resets).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let all = self.injected.lock().unwrap();
        let count = |f: &dyn Fn(&Fault) -> bool| all.iter().filter(|(x, _)| f(x)).count();
        (
            count(&|f| *f == Fault::Status500),
            count(&|f| {
                matches!(
                    f,
                    Fault::TooMany {
                        retry_after: Some(_)
                    }
                )
            }),
            count(&|f| matches!(f, Fault::TooMany { retry_after: None })),
            count(&|f| *f == Fault::Reset),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP head (through the blank line).
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// The head with `Connection: close` instead of whatever it said.
fn closing(head: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for line in head {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out += line;
            out += "\r\n";
        }
    }
    out += "Connection: close\r\n\r\n";
    out.into_bytes()
}

fn serve(
    client: TcpStream,
    upstream: u16,
    plan: &Plan,
    injected: &Mutex<Vec<(Fault, String)>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let request_line = head.first().cloned().unwrap_or_default();
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let fault = plan(n, &request_line);
    let mut client_w = client.try_clone()?;
    if fault != Fault::Pass {
        injected.lock().unwrap().push((fault, request_line));
    }
    match fault {
        Fault::Pass => {}
        Fault::Status500 => {
            client_w.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Status(code) => {
            answer(&client, &format!("{code} Injected"), "", r#"{"errors":[]}"#)?;
            return Ok(());
        }
        Fault::TooMany { retry_after } => {
            let header = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
            answer(&client, "429 Too Many Requests", &header, body)?;
            return Ok(());
        }
        Fault::Reset => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a valid linger struct.
            unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            drop(reader);
            drop(client_w);
            drop(client); // closing with linger 0 sends RST
            return Ok(());
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&closing(&head))?;
    // Whatever the client already buffered (body start), then the rest.
    let buffered = reader.buffer().to_vec();
    up.write_all(&buffered)?;
    let mut up_w = up.try_clone()?;
    let body = std::thread::spawn(move || {
        let mut rest = reader.into_inner();
        let _ = std::io::copy(&mut rest, &mut up_w);
    });
    let mut up_reader = BufReader::new(up.try_clone()?);
    let response = read_head(&mut up_reader)?;
    client_w.write_all(&closing(&response))?;
    client_w.write_all(up_reader.buffer())?;
    let mut rest = up_reader.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        client_w.write_all(&buf[..n])?;
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = body.join();
    Ok(())
}

/// Answers `status` (`429 Too Many Requests`) with the `headers` lines and
/// a JSON `body`, then closes the connection.
fn answer(client: &TcpStream, status: &str, headers: &str, body: &str) -> std::io::Result<()> {
    let mut client_w = client.try_clone()?;
    client_w.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
