//! The path every verb runs through: read env and stdin, validate, dispatch, print the result or
//! the error JSON on stdout (libcni reads errors from stdout), and return the exit code.

use crate::config::{NetConf, MAX_CONFIG_BYTES};
use crate::env::{Command, Env};
use crate::error::CniError;
use crate::result::CniResult;
use crate::version::CniVersion;
use serde_json::json;
use std::io::{Read, Write};

/// What a CNI plugin implements. Each verb gets a validated environment and config.
pub trait Plugin {
    /// Called once before any verb except VERSION, e.g. to open the log file the config names.
    fn start(&self, _env: &Env, _conf: &NetConf) {}
    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, CniError>;
    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    /// Called with every error before it is printed, e.g. to log it.
    fn on_error(&self, _command: Option<Command>, _err: &CniError) {}
}

/// What Rust's runtime start-up does that a plugin needs: the plugin binaries are built `no_main`
/// (that start-up costs a share of every ADD), so [`run`] does this first.
/// - stdin, stdout and stderr are open: one the runtime left closed gets /dev/null, or the first
///   file or socket the plugin opens would take its number and receive the result;
/// - SIGPIPE is ignored: a runtime that stops reading makes the write fail, not kill the plugin
///   halfway through.
fn prepare_process() {
    let mut std_fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll reads and writes only the three pollfds it is given; open and signal take a
    // valid C string and a valid handler.
    unsafe {
        if libc::poll(std_fds.as_mut_ptr(), 3, 0) >= 0 {
            for p in &std_fds {
                if p.revents & libc::POLLNVAL != 0 {
                    // The lowest free number: this one, as the lower ones are open by now.
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                }
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Run one invocation against the real process environment and stdio; returns the exit code.
/// A panic (a bug) still answers with CNI error JSON rather than a bare abort. The plugin
/// binaries' whole `main` (built `no_main`: see `prepare_process`).
pub fn run<P: Plugin>(plugin: &P) -> i32 {
    prepare_process();
    static PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    std::panic::set_hook(Box::new(|info| {
        // One error document per invocation, whichever thread panics first.
        if !PRINTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let err =
                CniError::new(crate::error::ErrorCode::Internal, format!("internal error, please report: {info}"));
            println!("{}", err.to_json(CniVersion::LATEST.as_str()));
        }
        eprintln!("{info}");
    }));
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    run_with(plugin, |k| std::env::var(k).ok(), &mut stdin.lock(), &mut stdout.lock())
}

pub fn run_with<P: Plugin>(
    plugin: &P,
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let mut version_in_use = CniVersion::LATEST.as_str().to_string();
    let mut command = None;
    let outcome = dispatch(plugin, &get_env, stdin, &mut version_in_use, &mut command);
    let (code, body) = match outcome {
        Ok(Some(body)) => (0, Some(body)),
        Ok(None) => (0, None),
        Err(err) => {
            plugin.on_error(command, &err);
            (1, Some(err.to_json(&version_in_use)))
        }
    };
    if let Some(body) = body {
        // A broken stdout pipe leaves nothing to report to; the exit code still tells.
        let _ = serde_json::to_writer(&mut *stdout, &body);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
    code
}

fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::io(format!("reading the network config from stdin: {e}")))?;
    if buf.len() > MAX_CONFIG_BYTES {
        return Err(CniError::decode(format!(
            "stdin holds more than {MAX_CONFIG_BYTES} bytes; a network config is a few KiB"
        )));
    }
    Ok(buf)
}

fn dispatch<P: Plugin>(
    plugin: &P,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version_in_use: &mut String,
    command_out: &mut Option<Command>,
) -> Result<Option<serde_json::Value>, CniError> {
    let command = Command::parse(&get_env("CNI_COMMAND").unwrap_or_default())?;
    *command_out = Some(command);
    if command == Command::Version {
        // Answer from CNI_COMMAND alone: runtimes send placeholder env and may send no config.
        let bytes = read_stdin(stdin).unwrap_or_default();
        let asked = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(str::to_string))
            .unwrap_or_else(|| CniVersion::LATEST.as_str().to_string());
        let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        return Ok(Some(json!({ "cniVersion": asked, "supportedVersions": supported })));
    }
    let bytes = read_stdin(stdin)?;
    // Parse the config before the env so errors carry the config's cniVersion where there is one.
    let conf = NetConf::parse(&bytes)?;
    *version_in_use = conf.cni_version.as_str().to_string();
    let env = Env::from_lookup(get_env)?;
    let gate = |min: CniVersion| -> Result<(), CniError> {
        if conf.cni_version < min {
            return Err(CniError::incompatible_version(format!(
                "config version {} does not allow {}; it needs cniVersion {min} or later",
                conf.cni_version,
                command.as_str()
            )));
        }
        Ok(())
    };
    plugin.start(&env, &conf);
    match command {
        Command::Add => plugin.add(&env, &conf).map(|r| Some(r.to_json(conf.cni_version))),
        Command::Del => plugin.del(&env, &conf).map(|_| None),
        Command::Check => {
            gate(CniVersion::V0_4_0)?;
            plugin.check(&env, &conf).map(|_| None)
        }
        Command::Status => {
            gate(CniVersion::V1_1_0)?;
            plugin.status(&env, &conf).map(|_| None)
        }
        Command::Gc => {
            gate(CniVersion::V1_1_0)?;
            plugin.gc(&env, &conf).map(|_| None)
        }
        Command::Version => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, _: &Env, _: &NetConf) -> Result<CniResult, CniError> {
            Ok(CniResult::default())
        }
        fn del(&self, _: &Env, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Env, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn status(&self, _: &Env, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn gc(&self, _: &Env, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn call(env: &[(&str, &str)], stdin: &str) -> (i32, serde_json::Value) {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut out = Vec::new();
        let code = run_with(&Fake, |k| m.get(k).cloned(), &mut stdin.as_bytes(), &mut out);
        let v = if out.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&out).unwrap() };
        (code, v)
    }

    #[test]
    fn version_answers_with_placeholder_env() {
        let (code, v) = call(
            &[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy"), ("CNI_PATH", "dummy")],
            r#"{"cniVersion":"1.0.0"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
        let (code, v) = call(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!((code, v["cniVersion"].as_str()), (0, Some("1.1.0")));
    }

    #[test]
    fn gates_and_errors_are_json_on_stdout() {
        let add = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        let (code, v) = call(&add, r#"{"cniVersion":"0.4.0","name":"n","type":"podnet"}"#);
        assert_eq!((code, v["cniVersion"].as_str(), v["ips"].is_array()), (0, Some("0.4.0"), true));
        let check = [("CNI_COMMAND", "CHECK"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        let (code, v) = call(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
        let (code, v) = call(&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
        let (code, v) = call(&[("CNI_COMMAND", "STATUS")], r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!((code, v), (0, serde_json::Value::Null));
        let (code, v) = call(&add, "not json");
        assert_eq!((code, v["code"].as_u64(), v["cniVersion"].as_str()), (1, Some(6), Some("1.1.0")));
        let (_, v) = call(&[("CNI_COMMAND", "ADD")], r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((v["code"].as_u64(), v["cniVersion"].as_str()), (Some(4), Some("1.0.0")));
    }
}
