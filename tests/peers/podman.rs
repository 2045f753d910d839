//! podman with private, throwaway storage (vfs driver, graphroot and runroot
//! in a temp dir), runc, fixed ulimits and no network, as test-peers.md
//! describes for this machine. Nothing touches the host's image store.
use std::path::Path;
use std::process::Command;

use super::tools;

pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    /// `None` if podman/runc are missing outside CI.
    pub fn new() -> Option<Podman> {
        tools::require(&["podman", "runc"])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("graph").display(),
                root.join("run").display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Some(Podman { dir })
    }

    /// A `podman` command using this private storage.
    pub fn command(&self) -> Command {
        let root = self.dir.path();
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"))
            .env("CONTAINERS_CONF", root.join("containers.conf"))
            .env("XDG_RUNTIME_DIR", root.join("xdg"))
            .env("TMPDIR", root);
        command
    }

    /// `podman load -i archive`; returns stdout.
    pub fn load(&self, archive: &Path) -> String {
        let output = tools::run_ok(self.command().arg("load").arg("-i").arg(archive));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `podman run --rm --network none IMAGE ARGS...`; returns stdout.
    pub fn run(&self, image: &str, args: &[&str]) -> String {
        let output = tools::run_ok(
            self.command()
                .args(["run", "--rm", "--network", "none", "--runtime", "runc"])
                .args([
                    "--ulimit",
                    "nofile=1024:1024",
                    "--ulimit",
                    "nproc=1024:1024",
                ])
                .arg(image)
                .args(args),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
