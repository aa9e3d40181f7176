//! `kaosctl module build` (local: packs a directory) and `kaosctl module inspect` (protocol 1.3).

use std::path::Path;

use kaos_module::manifest::{ConfigKey, Kind, Manifest, Protocol};
use kaos_protocol::{ModuleInfo, ModuleInspectQuery, Request, Response};
use kaosctl::config::ConfigError;
use kaosctl::connect::Error;
use kaosctl::{Client, ClientError};
use serde_json::json;

use crate::args::Output;
use crate::show;
use crate::vm_cmds::{object_name, refused};

/// `module build DIR -o FILE`: packs the App Module in `dir` (see `kaos_module::source`) and
/// writes it to `out`. Nothing is written unless the module would be accepted by a host.
pub fn build(dir: &Path, out: &Path, output: Output) -> Result<(), Error> {
    let bytes = kaos_module::source::build_dir(dir)
        .map_err(|e| ConfigError::Usage(format!("module build: {e}")))?;
    let module = kaos_module::parse(&bytes, &kaos_module::Limits::APP)
        .map_err(|e| ConfigError::Usage(format!("module build: {e}")))?;
    std::fs::write(out, &bytes).map_err(|source| ConfigError::Io {
        path: out.to_owned(),
        source,
    })?;
    let view = json!({
        "name": module.manifest.name,
        "version": module.manifest.version,
        "file": out.display().to_string(),
        "size": bytes.len(),
        "sha256": module.sha256_hex(),
    });
    show(output, &view, |v| {
        format!(
            "{} {}: {} ({} bytes, sha256 {})\n",
            module.manifest.name,
            module.manifest.version,
            out.display(),
            v["size"],
            module.sha256_hex()
        )
    })
}

/// `ModuleInspect` arrived in protocol 1.3: an older host would drop the connection.
fn needs_1_3(c: &Client) -> Result<(), Error> {
    let v = c.server().version;
    if v.minor < 3 {
        return Err(ClientError::Refused {
            code: kaos_protocol::ErrorCode::Unsupported,
            message: format!(
                "{} speaks management protocol {v}; module inspect needs 1.3 (update its image)",
                c.server().hostname
            ),
        }
        .into());
    }
    Ok(())
}

/// `module inspect NAME`: the stored module and its manifest.
pub fn inspect(c: &mut Client, name: &str, output: Output) -> Result<(), Error> {
    needs_1_3(c)?;
    let name = object_name("module", name)?;
    let mut bytes = Vec::new();
    let mut first: Option<ModuleInfo> = None;
    loop {
        let offset = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let query = ModuleInspectQuery {
            name: name.clone(),
            offset,
        };
        let part = match c.request(Request::ModuleInspect(query))? {
            Response::ModuleManifest(part) => part,
            Response::Error(e) => return Err(refused(&e)),
            other => return Err(c.unexpected(&other).into()),
        };
        if first
            .as_ref()
            .is_some_and(|m| m.sha256 != part.module.sha256)
        {
            return Err(ClientError::Refused {
                code: kaos_protocol::ErrorCode::Conflict,
                message: format!("module {name} was replaced while it was read; try again"),
            }
            .into());
        }
        if part.offset != offset || (part.data.is_empty() && bytes.len() < part.total as usize) {
            return Err(c.unexpected(&Response::ModuleManifest(part)).into());
        }
        bytes.extend_from_slice(&part.data);
        let done = bytes.len() >= part.total as usize;
        first.get_or_insert(part.module);
        if done {
            break;
        }
    }
    let Some(info) = first else {
        return Err(c.unexpected(&Response::Accepted).into());
    };
    let manifest =
        kaos_module::decode_manifest_entry(&bytes).map_err(|e| ClientError::Refused {
            code: kaos_protocol::ErrorCode::Internal,
            message: format!("the host sent a manifest this kaosctl cannot read: {e}"),
        })?;
    show(output, &inspect_view(&info, &manifest), |_| {
        inspect_table(&info, &manifest)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn inspect_view(info: &ModuleInfo, m: &Manifest) -> serde_json::Value {
    let mut view = json!({
        "name": info.name.as_str(),
        "kind": info.kind.as_str(),
        "version": info.version.as_str(),
        "size": info.size,
        "sha256": hex(&info.sha256),
    });
    match &m.kind {
        Kind::Platform(p) => view["kernel_release"] = json!(p.kernel_release),
        Kind::App(app) => {
            view["entrypoints"] = app
                .entrypoints
                .iter()
                .map(|e| {
                    json!({"name": e.name, "exec": e.exec, "args": e.args,
                           "restart": e.restart.as_str()})
                })
                .collect();
            view["ports"] = app
                .ports
                .iter()
                .map(|p| json!({"name": p.name, "protocol": protocol(p.protocol), "port": p.port}))
                .collect();
            view["config"] = app.config.iter().map(key_view).collect();
        }
    }
    view
}

fn key_view(k: &ConfigKey) -> serde_json::Value {
    json!({
        "key": k.key,
        "type": k.ty.as_str(),
        "default": k.default.as_ref().map(ToString::to_string),
        "description": k.description,
    })
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn inspect_table(info: &ModuleInfo, m: &Manifest) -> String {
    let mut out = format!(
        "NAME     {}\nKIND     {}\nVERSION  {}\nSIZE     {}\nSHA256   {}\n",
        info.name,
        info.kind.as_str(),
        info.version,
        info.size,
        hex(&info.sha256)
    );
    let app = match &m.kind {
        Kind::Platform(p) => return out + &format!("KERNEL   {}\n", p.kernel_release),
        Kind::App(app) => app,
    };
    let entrypoints: Vec<Vec<String>> = app
        .entrypoints
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.restart.as_str().into(),
                e.exec.clone(),
                e.args.join(" "),
            ]
        })
        .collect();
    out.push('\n');
    out += &columns(&["ENTRYPOINT", "RESTART", "EXEC", "ARGS"], &entrypoints);
    let ports: Vec<Vec<String>> = app
        .ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                protocol(p.protocol).into(),
                p.port.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out += &columns(&["PORT", "PROTOCOL", "NUMBER"], &ports);
    let keys: Vec<Vec<String>> = app
        .config
        .iter()
        .map(|k| {
            vec![
                k.key.clone(),
                k.ty.as_str().into(),
                k.default
                    .as_ref()
                    .map_or_else(|| "(required)".into(), ToString::to_string),
                k.description.clone(),
            ]
        })
        .collect();
    out.push('\n');
    out += &columns(&["KEY", "TYPE", "DEFAULT", "DESCRIPTION"], &keys);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_table_lists_the_schema() {
        let m = kaos_module::source::parse_manifest(
            "name = \"httpd\"\nversion = \"1\"\n[[entrypoint]]\nname = \"httpd\"\n\
             exec = \"bin/httpd\"\n[[port]]\nname = \"http\"\nprotocol = \"tcp\"\nport = 80\n\
             [config.greeting]\ntype = \"string\"\ndefault = \"hi\"\ndescription = \"the page\"\n\
             [config.peer]\ntype = \"ipv4\"\n",
        )
        .expect("valid");
        let info = ModuleInfo {
            name: kaos_protocol::truncated("httpd"),
            version: kaos_protocol::truncated("1"),
            kind: kaos_protocol::ModuleKind::App,
            sha256: [0; 32],
            size: 9,
        };
        let table = inspect_table(&info, &m);
        assert!(
            table.contains("httpd       on-failure  bin/httpd\n"),
            "{table}"
        );
        assert!(table.contains("http  tcp       80\n"), "{table}");
        assert!(
            table.contains("greeting  string  \"hi\"        the page\n"),
            "{table}"
        );
        assert!(table.contains("peer      ipv4    (required)\n"), "{table}");
        let view = inspect_view(&info, &m);
        assert_eq!(view["config"][0]["default"], "\"hi\"");
        assert_eq!(view["entrypoints"][0]["restart"], "on-failure");
    }
}
