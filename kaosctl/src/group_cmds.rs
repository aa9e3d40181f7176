//! `kaosctl group …` (protocol 1.4): configuration groups, the values an App Module's schema
//! asks for, shared by the images that name them.

use kaos_protocol::{GroupEdit, GroupSpec, GroupSummary, Request, Response};
use kaosctl::config::ConfigError;
use kaosctl::connect::Error;
use kaosctl::{Client, ClientError};
use serde_json::{Value, json};

use crate::apps_args::{GroupCmd, group_values, unset_keys};
use crate::args::Output;
use crate::module_cmds::columns;
use crate::show;
use crate::vm_cmds::{object_name, refused};

/// Groups and images arrived in protocol 1.4: an older host would drop the connection.
pub(crate) fn needs_1_4(c: &Client, what: &str) -> Result<(), Error> {
    let v = c.server().version;
    if v.minor < 4 {
        return Err(ClientError::Refused {
            code: kaos_protocol::ErrorCode::Unsupported,
            message: format!(
                "{} speaks management protocol {v}; {what} needs 1.4 (update its image)",
                c.server().hostname
            ),
        }
        .into());
    }
    Ok(())
}

/// `group …`.
pub fn group(c: &mut Client, cmd: &GroupCmd, output: Output) -> Result<(), Error> {
    needs_1_4(c, "group")?;
    match c.request(request(cmd)?)? {
        Response::Group(g) => show(output, &group_view(&g), |_| group_table(&g)),
        Response::Groups(list) => {
            let views: Vec<Value> = list.entries.iter().map(summary_view).collect();
            show(output, &views, |_| groups_table(&list.entries))
        }
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

/// What `cmd` asks of the host, after every check that needs no host.
fn request(cmd: &GroupCmd) -> Result<Request, ConfigError> {
    Ok(match cmd {
        GroupCmd::Create { name, module, set } => Request::GroupCreate(GroupSpec {
            name: object_name("group", name)?,
            module: object_name("module", module)?,
            values: group_values(set)?,
        }),
        GroupCmd::List => Request::GroupList,
        GroupCmd::Show { name } => Request::GroupShow(object_name("group", name)?),
        GroupCmd::Edit { name, set, unset } => {
            if set.is_empty() && unset.is_empty() {
                return Err(ConfigError::Usage(
                    "group edit: nothing to change (give --set KEY=VALUE or --unset KEY)".into(),
                ));
            }
            Request::GroupEdit(GroupEdit {
                name: object_name("group", name)?,
                set: group_values(set)?,
                unset: unset_keys(unset, set)?,
            })
        }
        GroupCmd::Delete { name } => Request::GroupDelete(object_name("group", name)?),
    })
}

fn group_view(g: &GroupSpec) -> Value {
    let values: serde_json::Map<String, Value> = g
        .values
        .iter()
        .map(|v| (v.key.to_string(), json!(v.value.as_str())))
        .collect();
    json!({
        "name": g.name.as_str(),
        "module": g.module.as_str(),
        "values": values,
    })
}

fn group_table(g: &GroupSpec) -> String {
    let mut out = format!("name    {}\nmodule  {}\n\n", g.name, g.module);
    if g.values.is_empty() {
        out.push_str("no values: every key takes its default\n");
        return out;
    }
    let rows: Vec<Vec<String>> = g
        .values
        .iter()
        .map(|v| {
            let value = if v.value.is_empty() {
                "\"\"".to_owned()
            } else {
                v.value.to_string()
            };
            vec![v.key.to_string(), value]
        })
        .collect();
    out + &columns(&["KEY", "VALUE"], &rows)
}

fn summary_view(g: &GroupSummary) -> Value {
    json!({
        "name": g.name.as_str(),
        "module": g.module.as_str(),
        "values": g.values,
        "images": g.images,
    })
}

fn groups_table(groups: &[GroupSummary]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.name.to_string(),
                g.module.to_string(),
                g.values.to_string(),
                g.images.to_string(),
            ]
        })
        .collect();
    columns(&["NAME", "MODULE", "VALUES", "IMAGES"], &rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Request, ConfigError> {
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Group(cmd) = cli.command else {
            panic!("not a group command")
        };
        request(&cmd)
    }

    #[test]
    fn create_sends_sorted_values() {
        let r = parse(&[
            "kaosctl",
            "group",
            "create",
            "web",
            "--module",
            "httpd",
            "--set",
            "port=8080",
            "--set",
            "greeting=hello world",
        ])
        .expect("valid");
        let Request::GroupCreate(spec) = r else {
            panic!("{r:?}")
        };
        assert_eq!((spec.name.as_str(), spec.module.as_str()), ("web", "httpd"));
        assert_eq!(spec.values[0].key.as_str(), "greeting");
        assert_eq!(spec.values[0].value.as_str(), "hello world");
        assert_eq!(spec.values[1].value.as_str(), "8080");
        let table = group_table(&spec);
        assert!(table.contains("greeting  hello world\n"), "{table}");
        assert_eq!(group_view(&spec)["values"]["port"], "8080");
    }

    #[test]
    fn bad_names_and_empty_edits_are_refused_before_sending() {
        assert!(parse(&["kaosctl", "group", "show", "Web"]).is_err());
        assert!(parse(&["kaosctl", "group", "create", "w", "--module", "a/b"]).is_err());
        let e = parse(&["kaosctl", "group", "edit", "web"]).expect_err("nothing to do");
        assert!(e.to_string().contains("nothing to change"), "{e}");
        let r = parse(&[
            "kaosctl", "group", "edit", "web", "--set", "a=1", "--unset", "b",
        ])
        .expect("valid");
        assert!(
            matches!(&r, Request::GroupEdit(e) if e.set.len() == 1 && e.unset[0] == "b"),
            "{r:?}"
        );
        assert!(
            Cli::try_parse_from([
                "kaosctl", "group", "create", "w", "--module", "m", "--set", "x"
            ])
            .is_err(),
            "--set needs KEY=VALUE"
        );
    }

    #[test]
    fn the_list_shows_each_group_once() {
        let g = GroupSummary {
            name: kaos_protocol::truncated("web"),
            module: kaos_protocol::truncated("httpd"),
            values: 2,
            images: 1,
        };
        let table = groups_table(std::slice::from_ref(&g));
        assert_eq!(
            table,
            "NAME  MODULE  VALUES  IMAGES\nweb   httpd   2       1\n"
        );
        assert_eq!(summary_view(&g)["images"], 1);
    }
}
