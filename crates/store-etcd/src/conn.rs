//! Connecting to etcd: the client with its single-threaded runtime, credentials and TLS, and
//! which failures are worth retrying.

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use podnet_ipam::config::EtcdConfig;
use std::time::Duration;

/// Why one attempt failed: worth retrying within the budget, or not.
pub(crate) enum Failure {
    Transient(String),
    Config(String),
}

/// Wrong credentials or permissions stay wrong: report them at once as a config error, not as
/// "try again later" after the whole budget.
pub(crate) fn classify(e: &etcd_client::Error) -> Failure {
    let permanent = match e {
        etcd_client::Error::GRpcStatus(status) => {
            let text = status.message().to_ascii_lowercase();
            text.contains("authentication failed")
                || text.contains("permission denied")
                || text.contains("invalid auth token")
        }
        _ => false,
    };
    if permanent {
        Failure::Config(format!("etcd refused the credentials or permissions: {e}; check username and passwordFile"))
    } else {
        Failure::Transient(e.to_string())
    }
}

/// A connection: the client and the single-threaded runtime that drives it.
pub(crate) type Conn = (tokio::runtime::Runtime, Client);

/// Open a client within `left`, with the config's credentials and TLS files.
pub(crate) fn connect(cfg: &EtcdConfig, left: Duration) -> Result<Conn, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Config(format!("starting the etcd client runtime: {e}")))?;
    let mut opts = ConnectOptions::new().with_connect_timeout(left).with_timeout(left);
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| Failure::Config(format!("reading {}: {e}", p.display())));
    if let (Some(user), Some(pw_file)) = (&cfg.username, &cfg.password_file) {
        // The password is read here and never logged.
        let password = String::from_utf8_lossy(&read(pw_file)?).trim_end_matches(['\n', '\r']).to_string();
        opts = opts.with_user(user.clone(), password);
    }
    if let Some(files) = &cfg.tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &files.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    let endpoints = cfg.endpoints.clone();
    let client = rt
        .block_on(async { tokio::time::timeout(left, Client::connect(endpoints, Some(opts))).await })
        .map_err(|_| Failure::Transient("connecting timed out".into()))?
        .map_err(|e| classify(&e))?;
    Ok((rt, client))
}
