//! `cargo xtask` command line: a thin dispatcher over the `xtask` library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xtask::image;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "KaOS-rs build automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the bootable host image: kernel (profile fragment over tinyconfig) with a built-in
    /// initramfs holding only the static kattach as /init.
    Image {
        /// Kernel profile: a fragment in kernel/profiles/<PROFILE>.config.
        #[arg(long, default_value = image::DEFAULT_PROFILE)]
        profile: String,
        /// Where to write the image [default: target/kaos/kaos-<PROFILE>.bzImage].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Image { profile, out } => {
            let info = image::build_image(&profile, out)?;
            println!("{info}");
        }
    }
    Ok(())
}
