//! A cloud host agent for tests and labs: an HTTP server inside a node's namespace that answers
//! the NIC inventory request (Azure NMAgent's `getinterfaceinfov1`) the way the test or lab says:
//! a document, an HTTP error, or no answer at all. It counts the requests it gets.

use crate::Netns;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the host agent answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this body.
    Document(String),
    /// This HTTP status, no document.
    Status(u16),
    /// Accept the request and never answer (until the agent stops).
    Hang,
}

/// One NIC of a document: (MAC, primary, subnet prefix, [(address, primary)]).
pub type NicSpec<'a> = (&'a str, bool, &'a str, Vec<(String, bool)>);

/// The document for these NICs.
pub fn document(nics: &[NicSpec]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Interfaces>\n");
    for (mac, primary, prefix, addrs) in nics {
        out += &format!(
            "  <Interface MacAddress=\"{mac}\" IsPrimary=\"{primary}\">\n    <IPSubnet Prefix=\"{prefix}\">\n"
        );
        for (a, p) in addrs {
            out += &format!("      <IPAddress Address=\"{a}\" IsPrimary=\"{p}\"/>\n");
        }
        out += "    </IPSubnet>\n  </Interface>\n";
    }
    out + "</Interfaces>\n"
}

/// Listen on `listen` (from a thread inside the namespace to serve in).
pub fn listen(listen: SocketAddr) -> std::io::Result<tiny_http::Server> {
    tiny_http::Server::http(listen).map_err(|e| std::io::Error::other(format!("listening on {listen}: {e}")))
}

/// Serve `answer()` until `stop` is set; `requests` counts what came in.
pub fn serve(
    server: tiny_http::Server,
    answer: &(dyn Fn() -> Answer + Sync),
    stop: &AtomicBool,
    requests: &AtomicUsize,
) {
    std::thread::scope(|s| {
        while !stop.load(Ordering::SeqCst) {
            let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) else { continue };
            requests.fetch_add(1, Ordering::SeqCst);
            match answer() {
                Answer::Document(body) => {
                    let _ = req.respond(tiny_http::Response::from_string(body));
                }
                Answer::Status(code) => {
                    let _ = req.respond(tiny_http::Response::from_string("").with_status_code(code));
                }
                Answer::Hang => {
                    // Hold the connection open on a thread of its own until the agent stops.
                    s.spawn(move || {
                        while !stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        drop(req);
                    });
                }
            }
        }
    });
}

/// A host agent on a thread of this process, inside `ns`; stopped when dropped.
pub struct HostAgent {
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    listen: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostAgent {
    pub fn start(ns: &Netns, addr: SocketAddr, answer: Answer) -> std::io::Result<HostAgent> {
        let answer = Arc::new(Mutex::new(answer));
        let (requests, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let file = std::fs::File::open(ns.path())?;
        let (a, r, st) = (answer.clone(), requests.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(std::io::Error::other(format!("entering the namespace: {e}"))));
                return;
            }
            let answer = move || a.lock().expect("not poisoned").clone();
            match listen(addr) {
                Ok(server) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(server, &answer, &st, &r);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx.recv().map_err(|_| std::io::Error::other("the host agent thread died"))??;
        Ok(HostAgent { answer, requests, stop, listen: addr, thread: Some(thread) })
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().expect("not poisoned") = answer;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}/machine/plugins?comp=nmagent&type=getinterfaceinfov1", self.listen)
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
