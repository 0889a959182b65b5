//! Spec versions podnet accepts, and the gates the spec puts on verbs.

use crate::error::CniError;
use std::fmt;

/// A CNI spec version podnet supports. Ordered, so gates read `v >= CniVersion::V0_4_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const ALL: [CniVersion; 5] = [Self::V0_3_0, Self::V0_3_1, Self::V0_4_0, Self::V1_0_0, Self::V1_1_0];
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(s: &str) -> Result<CniVersion, CniError> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            CniError::incompatible_version(format!(
                "cniVersion {s:?} is not supported; use one of {}",
                Self::supported_list()
            ))
        })
    }

    pub fn supported_list() -> String {
        Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// 0.3.x and 0.4.0 results carry `ips[].version`; 1.x results do not.
    pub fn ip_has_version_field(self) -> bool {
        self < Self::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_rejects_others() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()).unwrap(), v);
        }
        for bad in ["0.2.0", "0.1.0", "", "1.1", "2.0.0"] {
            let e = CniVersion::parse(bad).unwrap_err();
            assert_eq!(e.code, 1, "{bad}");
        }
        assert!(CniVersion::V0_4_0 > CniVersion::V0_3_1);
    }
}
