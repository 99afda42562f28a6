//! A fault-injecting HTTP/1.1 TCP proxy in front of an S3 server: it frames requests (head and
//! Content-Length body) so it can reset a connection mid-body, answer 503 SlowDown, stall, throttle,
//! count the bytes clients send and record the order of requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// Which requests faults apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// UploadPart and PutObject requests (anything with a body).
    Writes,
    /// Every request.
    All,
}

/// The faults to inject; counters count down as faults fire.
#[derive(Debug)]
pub struct Faults {
    pub target: Mutex<Target>,
    /// Requests to cut with a TCP reset halfway through their body.
    pub resets: AtomicU32,
    /// Requests to answer `503 SlowDown`.
    pub slowdowns: AtomicU32,
    /// Requests to swallow without an answer until the client gives up.
    pub stalls: AtomicU32,
    /// Answer every UploadPart `503 SlowDown`: a fault that never heals.
    pub parts_always_fail: AtomicBool,
    /// Hold new UploadPart requests (not forwarded) while set.
    pub hold_parts: AtomicBool,
    /// Bytes per second per connection from the client, 0 for no limit.
    pub rate: AtomicU64,
    /// Bytes clients sent through the proxy (heads and bodies).
    pub bytes_up: AtomicU64,
    /// `METHOD path` of every request, in the order they arrived.
    pub requests: Mutex<Vec<String>>,
    pub injected: AtomicU32,
}

impl Faults {
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::SeqCst)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 in front of `upstream` (an `http://host:port` URL).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults {
            target: Mutex::new(Target::Writes),
            resets: AtomicU32::new(0),
            slowdowns: AtomicU32::new(0),
            stalls: AtomicU32::new(0),
            parts_always_fail: AtomicBool::new(false),
            hold_parts: AtomicBool::new(false),
            rate: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            injected: AtomicU32::new(0),
        });
        let shared = Arc::clone(&faults);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let faults = Arc::clone(&shared);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = connection(client, &upstream, faults).await;
                });
            }
        });
        Proxy { addr, faults, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

enum Fault {
    None,
    Reset,
    SlowDown,
    Stall,
}

async fn connection(client: TcpStream, upstream: &str, faults: Arc<Faults>) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    // Answers flow back untouched.
    let back = {
        let client_write = Arc::clone(&client_write);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if client_write
                    .lock()
                    .await
                    .write_all(&buf[..n])
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = client_write.lock().await.shutdown().await;
        })
    };
    let mut pending: Vec<u8> = Vec::new();
    let result = async {
        loop {
            // Read one request head.
            let head_end = loop {
                if let Some(i) = find(&pending, b"\r\n\r\n") {
                    break i + 4;
                }
                let mut buf = [0u8; 16 << 10];
                let n = client_read.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            };
            let head: Vec<u8> = pending.drain(..head_end).collect();
            let text = String::from_utf8_lossy(&head).into_owned();
            let request_line = text.lines().next().unwrap_or("").to_string();
            let mut words = request_line.split(' ');
            let method = words.next().unwrap_or("").to_string();
            let path = words.next().unwrap_or("").to_string();
            let length: u64 = text
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            faults
                .requests
                .lock()
                .unwrap()
                .push(format!("{method} {path}"));

            let is_part = method == "PUT" && path.contains("partNumber=");
            while is_part && faults.hold_parts.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let targeted = match *faults.target.lock().unwrap() {
                Target::Writes => method == "PUT" || method == "POST" && length > 0,
                Target::All => true,
            };
            let fault = if is_part && faults.parts_always_fail.load(Ordering::SeqCst) {
                Fault::SlowDown
            } else if targeted && Faults::take(&faults.resets) {
                Fault::Reset
            } else if targeted && Faults::take(&faults.slowdowns) {
                Fault::SlowDown
            } else if targeted && Faults::take(&faults.stalls) {
                Fault::Stall
            } else {
                Fault::None
            };
            if !matches!(fault, Fault::None) {
                faults.injected.fetch_add(1, Ordering::SeqCst);
            }
            faults.bytes_up.fetch_add(head.len() as u64, Ordering::SeqCst);
            match fault {
                Fault::None => {
                    server_write.write_all(&head).await?;
                    forward(&mut client_read, &mut pending, &mut server_write, length, &faults).await?;
                }
                Fault::Reset => {
                    server_write.write_all(&head).await?;
                    let half = length / 2;
                    forward(&mut client_read, &mut pending, &mut server_write, half, &faults).await?;
                    back.abort();
                    reset(client_read, client_write).await;
                    return Ok(());
                }
                Fault::SlowDown => {
                    // Take the whole body so the client reads our answer, not a broken pipe.
                    let mut sink = tokio::io::sink();
                    forward(&mut client_read, &mut pending, &mut sink, length, &faults).await?;
                    back.abort();
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                                <Message>Please reduce your request rate.</Message></Error>";
                    let answer = format!(
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let mut w = client_write.lock().await;
                    w.write_all(answer.as_bytes()).await?;
                    w.shutdown().await?;
                    return Ok(());
                }
                Fault::Stall => {
                    // Hold the request until the client gives up and closes.
                    let mut buf = [0u8; 64 << 10];
                    loop {
                        match tokio::time::timeout(Duration::from_secs(120), client_read.read(&mut buf)).await {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                            Ok(Ok(_)) => {}
                        }
                    }
                    back.abort();
                    return Ok(());
                }
            }
        }
    }
    .await;
    back.abort();
    result
}

/// Copies `length` body bytes (the buffered ones first) from the client, throttled and counted.
async fn forward<W: tokio::io::AsyncWrite + Unpin>(
    client: &mut tokio::net::tcp::OwnedReadHalf,
    pending: &mut Vec<u8>,
    to: &mut W,
    length: u64,
    faults: &Faults,
) -> std::io::Result<()> {
    let mut left = length;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let chunk: Vec<u8> = if !pending.is_empty() {
            let n = (left as usize).min(pending.len());
            pending.drain(..n).collect()
        } else {
            let want = (left as usize).min(buf.len());
            let n = client.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf[..n].to_vec()
        };
        to.write_all(&chunk).await?;
        left -= chunk.len() as u64;
        faults
            .bytes_up
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        let rate = faults.rate.load(Ordering::SeqCst);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
        }
    }
    Ok(())
}

/// Closes the client connection with a TCP reset (SO_LINGER 0).
async fn reset(
    read: tokio::net::tcp::OwnedReadHalf,
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
) {
    let write = match Arc::try_unwrap(write) {
        Ok(w) => w.into_inner(),
        Err(shared) => {
            // The answer pipe still holds it for a moment: wait for it to let go.
            let mut shared = shared;
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match Arc::try_unwrap(shared) {
                    Ok(w) => break w.into_inner(),
                    Err(s) => shared = s,
                }
            }
        }
    };
    if let Ok(stream) = read.reunite(write) {
        // A zero linger makes the close a reset and does not block.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        drop(stream);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
