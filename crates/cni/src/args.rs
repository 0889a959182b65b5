//! CNI_ARGS: `KEY=VALUE;KEY=VALUE`. podnet knows the Kubernetes keys; anything else is an error
//! unless `IgnoreUnknown` is true (libcni's rule, which runtimes rely on).

use crate::error::CniError;

/// The pod identity a runtime passes in CNI_ARGS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub infra_container_id: Option<String>,
    pub ignore_unknown: bool,
}

impl PodArgs {
    pub fn parse(s: &str) -> Result<PodArgs, CniError> {
        let mut out = PodArgs::default();
        let mut unknown = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .filter(|(_, v)| !v.contains('='))
                .ok_or_else(|| CniError::invalid_env(format!("CNI_ARGS pair {pair:?} is not KEY=VALUE")))?;
            let value = Some(v.to_string()).filter(|v| !v.is_empty());
            match k {
                "K8S_POD_NAMESPACE" => out.namespace = value,
                "K8S_POD_NAME" => out.name = value,
                "K8S_POD_UID" => out.uid = value,
                "K8S_POD_INFRA_CONTAINER_ID" => out.infra_container_id = value,
                "IgnoreUnknown" => {
                    out.ignore_unknown = match v.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(CniError::invalid_env(format!(
                                "CNI_ARGS IgnoreUnknown={v:?}: use 1, 0, true or false"
                            )))
                        }
                    }
                }
                _ => unknown.push(k.to_string()),
            }
        }
        if !unknown.is_empty() && !out.ignore_unknown {
            return Err(CniError::invalid_env(format!(
                "CNI_ARGS has unknown keys {unknown:?}; podnet knows K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID (add IgnoreUnknown=1 to pass others)"
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_args() {
        let a = PodArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1;K8S_POD_INFRA_CONTAINER_ID=c1;FOO=bar").unwrap();
        assert_eq!(a.namespace.as_deref(), Some("default"));
        assert_eq!(a.name.as_deref(), Some("web-0"));
        assert_eq!(a.uid.as_deref(), Some("u1"));
        assert_eq!(a.infra_container_id.as_deref(), Some("c1"));
        assert!(a.ignore_unknown);
    }

    #[test]
    fn unknown_keys_need_ignore_unknown_and_order_does_not_matter() {
        assert_eq!(PodArgs::parse("FOO=bar").unwrap_err().code, 4);
        PodArgs::parse("FOO=bar;IgnoreUnknown=true").unwrap();
        assert_eq!(PodArgs::parse("FOO").unwrap_err().code, 4);
        assert_eq!(PodArgs::parse("A=b=c;IgnoreUnknown=1").unwrap_err().code, 4);
        assert_eq!(PodArgs::parse("IgnoreUnknown=maybe").unwrap_err().code, 4);
        assert_eq!(PodArgs::parse("").unwrap(), PodArgs::default());
    }
}
