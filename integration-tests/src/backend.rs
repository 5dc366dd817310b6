//! Small HTTP/1.1 backends that stand in for workloads behind the gateway.
//!
//! Each one listens on its own loopback port and answers every request with
//! `200`, its name as the body and an `x-backend: <name>` header. Knobs make it
//! fail a share of requests with `503` or answer late, and every request it
//! sees is recorded (method, path, headers) so tests can check rewrites and
//! count mirrored copies. One thread accepts; one thread serves each
//! connection (Envoy keeps upstream connections alive).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// How a backend answers. The default answers every request at once with 200.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Answer `failing` of every `out_of` requests with 503, in a fixed
    /// pattern (request `i` fails when `i % out_of < failing`), so a 1-of-2
    /// backend fails exactly every other request.
    pub failures: Option<Failures>,
    /// Wait this long before answering.
    pub delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failures {
    pub failing: u64,
    pub out_of: u64,
    /// The status failed requests get (503 unless changed).
    pub status: u16,
}

impl Behaviour {
    pub fn failing(failing: u64, out_of: u64) -> Behaviour {
        assert!(
            out_of > 0 && failing <= out_of,
            "failing {failing} of {out_of}"
        );
        Behaviour {
            failures: Some(Failures {
                failing,
                out_of,
                status: 503,
            }),
            delay: Duration::ZERO,
        }
    }

    /// Failed requests get `status` instead of 503.
    pub fn with_status(mut self, status: u16) -> Behaviour {
        if let Some(failures) = &mut self.failures {
            failures.status = status;
        }
        self
    }

    pub fn always_failing() -> Behaviour {
        Behaviour::failing(1, 1)
    }

    pub fn delayed(delay: Duration) -> Behaviour {
        Behaviour {
            failures: None,
            delay,
        }
    }
}

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent, query included.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

struct Shared {
    name: String,
    behaviour: Mutex<Behaviour>,
    /// Requests seen since the last reset; drives the failure pattern.
    seen: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
    stopping: AtomicBool,
}

/// A running backend; stops accepting when dropped.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    /// The network namespace it listens in, if not the host's.
    netns: Option<String>,
}

impl Backend {
    /// Starts a backend called `name` on a free loopback port.
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, ([127, 0, 0, 1], 0).into())
    }

    /// Starts a backend on `addr`, e.g. a workload's own loopback address.
    pub fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("binding {addr} for backend {name}: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            behaviour: Mutex::new(Behaviour::default()),
            seen: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawning a backend thread")
        };
        Backend {
            addr,
            shared,
            acceptor: Some(acceptor),
            netns: None,
        }
    }

    /// Starts a backend on every address of network namespace `netns`, at
    /// `port`: a pod's app.
    pub fn start_in_netns(name: &'static str, netns: &str, port: u16) -> Backend {
        let mut backend = crate::netns::enter(netns, move || {
            Backend::start_on(name, (Ipv4Addr::UNSPECIFIED, port).into())
        });
        backend.netns = Some(netns.to_owned());
        backend
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Back to answering 200 at once, with no requests recorded.
    pub fn reset(&self) {
        self.set_behaviour(Behaviour::default());
        self.shared.seen.store(0, Ordering::SeqCst);
        self.shared.requests.lock().unwrap().clear();
    }

    /// Every request received since the last reset, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag; a wildcard listener over
        // loopback, which no capture rule redirects.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let wake = move || {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        };
        match &self.netns {
            Some(netns) => crate::netns::enter(netns, wake),
            None => wake(),
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name(format!("backend-{}-conn", shared.name))
            .spawn(move || {
                let _ = serve_connection(stream, &shared);
            });
    }
}

/// Serves requests on one connection until the peer closes it, asks to
/// close, or stays idle for a minute.
fn serve_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader)? {
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let close = request
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        let index = shared.seen.fetch_add(1, Ordering::SeqCst);
        shared.requests.lock().unwrap().push(request);
        let behaviour = *shared.behaviour.lock().unwrap();
        if !behaviour.delay.is_zero() {
            std::thread::sleep(behaviour.delay);
        }
        let failure = behaviour.failures.filter(|f| index % f.out_of < f.failing);
        let (status, body) = match failure {
            Some(f) => (
                format!("{} Failed", f.status),
                format!("{} failed", shared.name),
            ),
            None => ("200 OK".to_string(), shared.name.clone()),
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nx-backend: {name}\r\ncontent-type: text/plain\r\n\
             content-length: {len}\r\n{connection}\r\n{body}",
            name = shared.name,
            len = body.len(),
            connection = if close { "connection: close\r\n" } else { "" },
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one request head and skips its body; `None` when the peer closed
/// the connection between requests.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<RecordedRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let request = RecordedRequest {
        method,
        path,
        headers,
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
    {
        crate::http_client::read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: u64 = length
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad content-length {length:?}")))?;
        std::io::copy(&mut reader.take(length), &mut std::io::sink())?;
    }
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::HttpRequest;
    use std::time::Instant;

    #[test]
    fn answers_with_its_name_and_records_requests() {
        let backend = Backend::start("v1");
        let response = HttpRequest::get("/hello?x=1")
            .header("end-user", "jason")
            .send(backend.addr())
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "v1");
        assert_eq!(response.header("x-backend"), Some("v1"));
        let requests = backend.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path, "/hello?x=1");
        assert_eq!(requests[0].header("End-User"), Some("jason"));
    }

    #[test]
    fn fails_in_a_fixed_pattern_and_keeps_connections_alive() {
        let backend = Backend::start("flaky");
        backend.set_behaviour(Behaviour::failing(1, 2).with_status(500));
        let mut stream = TcpStream::connect(backend.addr()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut statuses = Vec::new();
        for _ in 0..4 {
            write!(stream, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let response = crate::http_client::read_response(&mut reader).unwrap();
            statuses.push(response.status);
        }
        assert_eq!(statuses, [500, 200, 500, 200]);
        backend.reset();
        let response = HttpRequest::get("/").send(backend.addr()).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(backend.request_count(), 1);
    }

    #[test]
    fn delays_answers() {
        let backend = Backend::start("slow");
        backend.set_behaviour(Behaviour::delayed(Duration::from_millis(300)));
        let started = Instant::now();
        let response = HttpRequest::get("/").send(backend.addr()).unwrap();
        assert_eq!(response.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
