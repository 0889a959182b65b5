//! The CNI_* environment: which verb, which attachment, and strict validation of each value.

use crate::args::PodArgs;
use crate::error::CniError;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND is not set; podnet is a CNI plugin, run by a container runtime",
                ))
            }
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND={other:?} is unknown; use ADD, DEL, CHECK, VERSION, STATUS or GC"
                )))
            }
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The attachment a verb acts on, validated. Fields a verb does not need are `None`.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: PodArgs,
    pub path: Vec<PathBuf>,
}

/// Longest container ID accepted: runtimes use 64 hex characters, and the ID becomes part of file names.
pub const MAX_CONTAINER_ID_LEN: usize = 128;

pub fn validate_container_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(format!("is {} bytes long; at most {MAX_CONTAINER_ID_LEN} are allowed", id.len()));
    }
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return Err(format!("{id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"));
    }
    Ok(())
}

/// Linux interface names: 1-15 bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("{name:?} is {} bytes long; interface names hold at most 15", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0') {
        return Err(format!("{name:?} must not contain '/', ':', whitespace or NUL"));
    }
    Ok(())
}

impl Env {
    /// Read and validate what `command` needs from `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default())?;
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let (need_attachment, need_netns) = match command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (true, false),
            Command::Version | Command::Status | Command::Gc => (false, false),
        };
        let mut env =
            Env { command, container_id: None, netns: None, ifname: None, args: PodArgs::default(), path: Vec::new() };
        if command == Command::Version {
            // Runtimes call VERSION with placeholder values (podman: CNI_NETNS=dummy); ignore them.
            return Ok(env);
        }
        env.path =
            get("CNI_PATH").unwrap_or_default().split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        if need_attachment {
            let id = nonempty("CNI_CONTAINERID").ok_or_else(|| {
                CniError::invalid_env(format!("CNI_CONTAINERID is required for {}", command.as_str()))
            })?;
            validate_container_id(&id).map_err(|e| CniError::invalid_env(format!("CNI_CONTAINERID {e}")))?;
            let ifname = nonempty("CNI_IFNAME")
                .ok_or_else(|| CniError::invalid_env(format!("CNI_IFNAME is required for {}", command.as_str())))?;
            validate_ifname(&ifname).map_err(|e| CniError::invalid_env(format!("CNI_IFNAME {e}")))?;
            env.container_id = Some(id);
            env.ifname = Some(ifname);
            env.args = PodArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        }
        match nonempty("CNI_NETNS") {
            Some(ns) => {
                if ns.contains('\0') || !ns.starts_with('/') {
                    return Err(CniError::invalid_env(format!(
                        "CNI_NETNS {ns:?} must be an absolute path to a network namespace"
                    )));
                }
                env.netns = Some(PathBuf::from(ns));
            }
            None if need_netns => {
                return Err(CniError::invalid_env(format!("CNI_NETNS is required for {}", command.as_str())))
            }
            None => {}
        }
        Ok(env)
    }

    /// The attachment's handle parts; only call for verbs that require them.
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_everything() {
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/x"),
        ])
        .unwrap();
        assert_eq!(ok.path.len(), 2);
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let all = [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
            ];
            let pairs: Vec<_> = all.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains(missing), "{}", e.msg);
        }
    }

    #[test]
    fn del_works_without_netns_and_version_ignores_placeholders() {
        env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]).unwrap();
        env(&[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy"), ("CNI_IFNAME", "dummy"), ("CNI_CONTAINERID", "")])
            .unwrap();
        env(&[("CNI_COMMAND", "GC"), ("CNI_CONTAINERID", ""), ("CNI_IFNAME", "")]).unwrap();
    }

    #[test]
    fn hostile_values_are_rejected() {
        let long = "a".repeat(1024);
        for id in ["../x", "a/b", "a\0b", ".hidden", "-x", long.as_str(), "a b"] {
            assert!(validate_container_id(id).is_err(), "{id:?}");
        }
        for name in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop", "a\tb"] {
            assert!(validate_ifname(name).is_err(), "{name:?}");
        }
        validate_ifname("eth0").unwrap();
        validate_ifname("abcdefghijklmno").unwrap();
        validate_container_id("0123abc_.-Z").unwrap();
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "relative"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
        assert_eq!(env(&[]).unwrap_err().code, 4);
    }
}
