//! The guest plan: what an instance of a VM image runs, handed by the host to the guest
//! `kattach` inside the guest's initrd.
//!
//! The host appends one more cpio archive ([`apps_initrd`]) to the guest initrd; Linux unpacks
//! concatenated archives into the same root. It holds
//!
//! ```text
//! kaos/plan              postcard GuestPlan (PLAN_FORMAT first)
//! kaos/aqi/<name>.aqi    each App Module as stored on the host, byte for byte
//! ```
//!
//! and the guest checks each archive against the SHA-256 in the plan, parses it as the host
//! did, unpacks it under `/kaos/modules/<name>/`, renders the groups into
//! `/etc/kaos/<module>/<group>.toml`, and starts the entrypoints.

use serde::{Deserialize, Serialize};

use crate::cpio::{WriteError, Writer};

/// Where the plan is in the guest's root.
pub const PLAN_PATH: &str = "kaos/plan";
/// The directory of the modules' archives in the guest's root.
pub const AQI_DIR: &str = "kaos/aqi";
/// The directory modules are unpacked into (`<MODULES_DIR>/<name>/`).
pub const MODULES_DIR: &str = "kaos/modules";
/// The directory groups are rendered into (`<CONFIG_DIR>/<module>/<group>.toml`).
pub const CONFIG_DIR: &str = "etc/kaos";
/// The plan format this build writes and reads.
pub const PLAN_FORMAT: u16 = 1;
/// Largest plan a guest reads.
pub const MAX_PLAN: usize = 64 << 10;

/// What one instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPlan {
    /// [`PLAN_FORMAT`].
    pub format: u16,
    /// The image the instance was deployed from.
    pub image: String,
    /// App Modules, in start order; each at `kaos/aqi/<name>.aqi`.
    pub modules: Vec<PlanModule>,
    /// Configuration groups to render.
    pub groups: Vec<PlanGroup>,
}

/// One App Module of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanModule {
    /// Its name (the archive's manifest must say the same).
    pub name: String,
    /// SHA-256 of its `.aqi` file.
    pub sha256: [u8; 32],
}

/// One configuration group of a plan: the values it sets, as text (see [`crate::group`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanGroup {
    /// The module whose schema it follows.
    pub module: String,
    /// Its name.
    pub name: String,
    /// Its values.
    pub values: Vec<(String, String)>,
}

/// Path of module `name`'s archive in the guest's root.
pub fn aqi_path(name: &str) -> String {
    format!("{AQI_DIR}/{name}.aqi")
}

/// The cpio archive that carries `plan` and the modules' archives (`(name, bytes)`, in plan
/// order) to the guest.
pub fn apps_initrd(plan: &GuestPlan, modules: &[(&str, &[u8])]) -> Result<Vec<u8>, WriteError> {
    let encoded = encode(plan);
    let mut w = Writer::new();
    w.dir("kaos", 0o755)?;
    w.file(PLAN_PATH, 0o444, &encoded)?;
    w.dir(AQI_DIR, 0o755)?;
    for (name, bytes) in modules {
        w.file(&aqi_path(name), 0o444, bytes)?;
    }
    Ok(w.finish())
}

/// Encodes a plan (as [`PLAN_PATH`] holds it).
pub fn encode(plan: &GuestPlan) -> Vec<u8> {
    // Strings and vectors only: postcard cannot fail on them.
    postcard::to_allocvec(plan).unwrap_or_default()
}

/// Decodes a plan; refuses one too large, undecodable or of another format, saying which.
pub fn decode(bytes: &[u8]) -> Result<GuestPlan, String> {
    if bytes.len() > MAX_PLAN {
        return Err(format!("{} bytes, more than {MAX_PLAN}", bytes.len()));
    }
    let format: u16 = postcard::take_from_bytes(bytes)
        .map(|(f, _)| f)
        .map_err(|e| format!("format number: {e}"))?;
    if format != PLAN_FORMAT {
        return Err(format!("format {format}, this build reads {PLAN_FORMAT}"));
    }
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{Policy, Reader};

    #[test]
    fn the_apps_initrd_holds_the_plan_and_the_archives() {
        let plan = GuestPlan {
            format: PLAN_FORMAT,
            image: "web".into(),
            modules: vec![PlanModule {
                name: "httpd".into(),
                sha256: [7; 32],
            }],
            groups: vec![PlanGroup {
                module: "httpd".into(),
                name: "site".into(),
                values: vec![("greeting".into(), "hello".into())],
            }],
        };
        let bytes = apps_initrd(&plan, &[("httpd", b"AQI")]).expect("small");
        let entries: Vec<(String, Vec<u8>)> = Reader::new(&bytes, Policy::STRICT)
            .map(|e| e.expect("valid"))
            .map(|e| (e.name.to_owned(), e.data.to_vec()))
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["kaos", "kaos/plan", "kaos/aqi", "kaos/aqi/httpd.aqi"]
        );
        assert_eq!(decode(&entries[1].1), Ok(plan));
        assert_eq!(entries[3].1, b"AQI");
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0]).expect_err("newer").contains("format 2"));
        assert!(decode(&vec![1; MAX_PLAN + 1]).is_err());
        assert!(decode(&[1, 3, b'w']).is_err(), "truncated");
    }
}
