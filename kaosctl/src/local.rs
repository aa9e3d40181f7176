//! Commands that never connect: keys, contexts, completions.

use std::path::Path;

use clap::CommandFactory as _;
use kaosctl::config::{ConfigDir, ConfigError, Context, Endpoint, valid_name};
use kaosctl::connect::{Error, PinSlot, Selection, Target, resolve};
use kaosctl::view::{ContextView, KeyView, context_table};

use crate::args::{Cli, ContextCmd, KeyCmd, Output};
use crate::{emit, show};

/// `key generate|show`.
pub fn key(
    cmd: &KeyCmd,
    dir: &ConfigDir,
    selection: impl FnOnce() -> Result<Selection, ConfigError>,
    output: Output,
) -> Result<(), Error> {
    let view = match cmd {
        KeyCmd::Generate { name, force } => {
            let (key, public) = dir.generate_key(name, *force)?;
            KeyView::new(&key, &public)
        }
        KeyCmd::Show { name } => {
            let key = match name {
                Some(name) => dir.key_ref(name, Path::new("")),
                None => resolve(dir, &selection()?)?.key,
            };
            KeyView::new(&key, &dir.load_key(&key)?.public())
        }
    };
    show(output, &view, KeyView::table)
}

/// What `context add` takes from the global flags, when given on the command line (an
/// environment variable meant for other commands must not end up in config.toml).
#[derive(Debug)]
pub struct AddFlags {
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--key`.
    pub key: Option<String>,
}

/// `context add|list|use|remove|unpin`.
pub fn context(
    cmd: &ContextCmd,
    dir: &ConfigDir,
    add: AddFlags,
    selection: impl FnOnce() -> Result<Selection, ConfigError>,
    output: Output,
) -> Result<(), Error> {
    let mut config = dir.load()?;
    match cmd {
        ContextCmd::Add { name, use_it } => {
            let context = new_context(dir, name, add)?;
            if let Ok(existing) = config.context(name) {
                return Err(ConfigError::Usage(format!(
                    "context {name} exists (endpoint {}); `kaosctl context remove {name}` first",
                    existing.endpoint
                ))
                .into());
            }
            config.contexts.insert(name.clone(), context);
            if *use_it {
                config.current_context = Some(name.clone());
            }
            dir.save(&config)?;
            let view = ContextView::all(&config)
                .into_iter()
                .find(|c| c.name == *name);
            show(output, &view, |_| {
                format!(
                    "added context {name}{}\n",
                    if *use_it { " (current)" } else { "" }
                )
            })
        }
        ContextCmd::List => show(output, &ContextView::all(&config), |c| context_table(c)),
        ContextCmd::Use { name } => {
            config.context(name)?;
            config.current_context = Some(name.clone());
            dir.save(&config)?;
            let view = serde_json::json!({ "current_context": name });
            show(output, &view, |_| format!("current context: {name}\n"))
        }
        ContextCmd::Remove { name } => {
            config.context(name)?;
            config.contexts.remove(name);
            if config.current_context.as_ref() == Some(name) {
                config.current_context = None;
            }
            dir.save(&config)?;
            let view = serde_json::json!({ "removed": name });
            show(output, &view, |_| format!("removed context {name}\n"))
        }
        ContextCmd::Unpin { name } => {
            let selection = match name {
                Some(name) => Selection {
                    context: Some(name.clone()),
                    ..Selection::default()
                },
                None => selection()?,
            };
            unpin(dir, &resolve(dir, &selection)?, output)
        }
    }
}

/// A context from `context add`'s arguments, checked.
fn new_context(dir: &ConfigDir, name: &str, add: AddFlags) -> Result<Context, ConfigError> {
    if !valid_name(name) {
        return Err(ConfigError::Usage(format!(
            "bad context name {name:?}: 1-32 of A-Z a-z 0-9 . _ -"
        )));
    }
    let endpoint: Endpoint = add
        .endpoint
        .ok_or_else(|| ConfigError::Usage("context add needs --endpoint HOST:PORT".into()))?
        .parse()
        .map_err(ConfigError::Usage)?;
    let key = match add.key {
        // Typed relative to the working directory, read relative to the configuration
        // directory: store it absolute.
        Some(path) if path.contains('/') => Some(
            std::path::absolute(&path)
                .map_err(|source| ConfigError::Io {
                    path: path.into(),
                    source,
                })?
                .to_string_lossy()
                .into_owned(),
        ),
        other => other,
    };
    if let Some(key) = &key {
        let path = dir.key_ref(key, dir.path()).secret;
        if !path.exists() {
            let generate = if key.contains('/') { "" } else { key.as_str() };
            eprintln!(
                "kaosctl: note: no key at {} yet (`kaosctl key generate {generate}`)",
                path.display()
            );
        }
    }
    Ok(Context {
        endpoint,
        key,
        host_key: None,
    })
}

fn unpin(dir: &ConfigDir, target: &Target, output: Output) -> Result<(), Error> {
    let old = dir.unpin(target)?;
    let fingerprint = old.map(|k| k.fingerprint().to_string());
    let view = serde_json::json!({
        "endpoint": target.endpoint,
        "context": match &target.slot {
            PinSlot::Context(name) => Some(name),
            PinSlot::KnownHosts => None,
        },
        "unpinned": fingerprint,
    });
    show(output, &view, |_| match &fingerprint {
        Some(fp) => format!(
            "dropped pin {fp} for {} ({}); the next contact needs --trust-new-host or --host-key\n",
            target.endpoint,
            target.slot_name()
        ),
        None => format!(
            "nothing pinned for {} ({})\n",
            target.endpoint,
            target.slot_name()
        ),
    })
}

/// `completions SHELL`: the script, on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kaosctl", &mut script);
    emit(&String::from_utf8_lossy(&script))
}
