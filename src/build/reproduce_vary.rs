//! Owns: the environment variations of `stagex reproduce` (reprotest's
//! idea, for OCI package builds): their names, parsing `--vary`, which of
//! them a builder allows (each one is either applied or reported "not
//! applicable" with the reason, never silently ignored), and the command
//! line that runs one build (control or varied) under them.
//!
//! A build runs as a child `stagex build` so that what is varied (umask,
//! clock, TZ, locale, CPU affinity, extra variables) reaches the whole
//! build, the builder processes and their containers included.
//!
//! The host name: buildah and podman give each RUN step its own UTS
//! namespace named after the container id (a random name, so a step that
//! records it never reproduces, varied or not). Where `unshare --uts`
//! works, both builds run in a UTS namespace of their own whose name
//! stagex sets (the control's and the varied one's differ when the
//! variation is on, are the same when it is off), and the child build
//! runs RUN steps with `--uts host` (`containerfile::BUILDER_UTS_ENV`), so
//! they see exactly that name.
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::containerfile::BUILDER_UTS_ENV;
use super::package_build::BuilderChoice;

/// One thing the varied build changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variation {
    Time,
    Tz,
    Umask,
    Locale,
    Hostname,
    BuildPath,
    Cpus,
    Environment,
}

impl Variation {
    pub const ALL: [Variation; 8] = [
        Variation::Time,
        Variation::Tz,
        Variation::Umask,
        Variation::Locale,
        Variation::Hostname,
        Variation::BuildPath,
        Variation::Cpus,
        Variation::Environment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variation::Time => "time",
            Variation::Tz => "tz",
            Variation::Umask => "umask",
            Variation::Locale => "locale",
            Variation::Hostname => "hostname",
            Variation::BuildPath => "build_path",
            Variation::Cpus => "cpus",
            Variation::Environment => "environment",
        }
    }

    fn parse(name: &str) -> Option<Variation> {
        let name = name.replace('-', "_");
        Variation::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// A `--vary` value that names no variation.
#[derive(Debug, thiserror::Error)]
#[error("--vary {given:?}: unknown variation {name:?}; known: time, tz, umask, locale, hostname, build_path, cpus, environment (-NAME turns one off, e.g. --vary -time,-umask)")]
pub struct UnknownVariation {
    pub given: String,
    pub name: String,
}

/// The variations turned on: all of them unless `--vary -NAME` (or
/// `none`, then `+NAME` for the ones wanted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarySet(BTreeSet<Variation>);

impl Default for VarySet {
    fn default() -> Self {
        VarySet(Variation::ALL.into_iter().collect())
    }
}

impl VarySet {
    /// Applies `-NAME` (off), `+NAME` or `NAME` (on), `none`, `all`, in order.
    pub fn parse(specs: &[String]) -> Result<VarySet, UnknownVariation> {
        let mut set = VarySet::default();
        for spec in specs.iter().flat_map(|s| s.split(',')) {
            let spec = spec.trim();
            match spec {
                "" => continue,
                "none" => set.0.clear(),
                "all" => set = VarySet::default(),
                _ => {
                    let (on, name) = match spec.strip_prefix('-') {
                        Some(name) => (false, name),
                        None => (true, spec.trim_start_matches('+')),
                    };
                    let v = Variation::parse(name).ok_or_else(|| UnknownVariation {
                        given: spec.to_string(),
                        name: name.to_string(),
                    })?;
                    if on {
                        set.0.insert(v);
                    } else {
                        set.0.remove(&v);
                    }
                }
            }
        }
        Ok(set)
    }

    pub fn contains(&self, v: Variation) -> bool {
        self.0.contains(&v)
    }
}

/// What this machine offers the variations.
#[derive(Clone, Debug)]
pub struct Host {
    /// `faketime` (Debian package faketime), when installed.
    pub faketime: Option<PathBuf>,
    /// `taskset` (util-linux), when installed.
    pub taskset: Option<PathBuf>,
    pub cpus: usize,
    /// `unshare --uts` (util-linux) runs, and `hostname` names the new
    /// namespace (root, or CAP_SYS_ADMIN).
    pub uts_namespace: bool,
}

impl Host {
    pub fn probe() -> Host {
        Host {
            faketime: super::containerfile::find_program("faketime"),
            taskset: super::containerfile::find_program("taskset"),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            uts_namespace: uts_namespace_works(),
        }
    }
}

/// Whether this process may name a UTS namespace of its own: runs
/// `unshare --uts hostname` once (without `unshare`, or without the
/// privilege: no).
fn uts_namespace_works() -> bool {
    Command::new("unshare")
        .args(["--uts", "hostname", CONTROL_HOSTNAME])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How one variation was applied to one builder's varied build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub variation: &'static str,
    /// `applied`, `not applicable` or `off` (turned off with --vary).
    pub state: &'static str,
    pub how: String,
}

/// The time shift faketime applies to the varied build.
const FAKETIME_OFFSET: &str = "+397d";
const VARIED_TZ: &str = "Pacific/Kiritimati";
const VARIED_LOCALE: &str = "fr_CH.UTF-8";
/// The host name RUN steps see in the control build (and in the varied
/// one when the host name is not varied).
const CONTROL_HOSTNAME: &str = "stagex-control";
const VARIED_HOSTNAME: &str = "stagex-varied-hostname";

/// How each variation applies to the varied build with `builder`.
pub fn applicability(set: &VarySet, builder: BuilderChoice, host: &Host) -> Vec<Applied> {
    Variation::ALL
        .into_iter()
        .map(|v| {
            let (state, how) = if !set.contains(v) {
                ("off", "turned off with --vary".to_string())
            } else {
                match how_applied(v, builder, host) {
                    Reach::Applied(how) => ("applied", how),
                    Reach::NotApplicable(why) => ("not applicable", why),
                }
            };
            Applied {
                variation: v.name(),
                state,
                how,
            }
        })
        .collect()
}

/// Whether a variation reaches a build: how, or why not.
enum Reach {
    Applied(String),
    NotApplicable(String),
}

fn how_applied(v: Variation, builder: BuilderChoice, host: &Host) -> Reach {
    let native = builder == BuilderChoice::Native;
    let how = match how_applied_to_stagex(v, builder, host) {
        Reach::Applied(how) => how,
        not_applicable => return not_applicable,
    };
    let process_only = matches!(
        v,
        Variation::Time | Variation::Tz | Variation::Locale | Variation::Environment
    );
    Reach::Applied(if process_only && !native {
        format!(
            "{how}; reaches the builder, not RUN steps (they get only the Containerfile's ENV/ARG)"
        )
    } else {
        how
    })
}

fn how_applied_to_stagex(v: Variation, builder: BuilderChoice, host: &Host) -> Reach {
    match v {
        Variation::Time => Reach::Applied(match &host.faketime {
            Some(_) => format!("faketime {FAKETIME_OFFSET}, started after the control build"),
            None => "started after the control build (faketime is not installed: the clock is not shifted further)".to_string(),
        }),
        Variation::Tz => Reach::Applied(format!("TZ={VARIED_TZ} (control: TZ=UTC)")),
        Variation::Umask => Reach::Applied("umask 0002 (control: 0022)".to_string()),
        Variation::Locale => Reach::Applied(format!(
            "LANG=LC_ALL={VARIED_LOCALE} (control: C.UTF-8)"
        )),
        Variation::Hostname => hostname_applied(builder, host),
        Variation::BuildPath => {
            Reach::Applied("another, deeper output root (the build work directories are inside it)".to_string())
        }
        Variation::Cpus => match (&host.taskset, host.cpus) {
            (None, _) => Reach::NotApplicable("taskset (util-linux) is not installed".to_string()),
            (_, 0 | 1) => Reach::NotApplicable("this machine has one CPU".to_string()),
            (Some(_), n) => Reach::Applied(format!(
                "taskset -c 0: 1 of {n} CPUs (builder processes and containers inherit it)"
            )),
        },
        Variation::Environment => Reach::Applied(
            "extra variables the build does not pass: CAPTURE_ENVIRONMENT, STAGEX_REPRODUCE_NOISE"
                .to_string(),
        ),
    }
}

/// Whether and how the host name RUN steps see is varied with `builder`.
fn hostname_applied(builder: BuilderChoice, host: &Host) -> Reach {
    match builder {
        BuilderChoice::Native => {
            Reach::NotApplicable("native builds run no program that could read the host name".to_string())
        }
        BuilderChoice::Docker => Reach::NotApplicable(
            "docker buildx runs RUN steps in buildkit's own UTS namespace (host name buildkitsandbox): stagex cannot set it"
                .to_string(),
        ),
        _ if !host.uts_namespace => Reach::NotApplicable(
            "`unshare --uts hostname` does not run here (util-linux missing, or no privilege for a UTS namespace)"
                .to_string(),
        ),
        _ => Reach::Applied(format!(
            "unshare --uts, host name {VARIED_HOSTNAME} (control: {CONTROL_HOSTNAME}); RUN steps run with --uts host and see it"
        )),
    }
}

/// The command running `stagex build ARGS` (`exe` is this program) as
/// the control build, or as the varied build under `set`.
pub fn build_command(
    exe: &Path,
    build_args: &[OsString],
    varied: bool,
    set: &VarySet,
    host: &Host,
) -> Command {
    let on = |v: Variation| varied && set.contains(v);
    let umask = if on(Variation::Umask) { "0002" } else { "0022" };
    let mut command = if host.uts_namespace {
        // Both builds name their namespace, so that with the variation
        // off they see the same name (and RUN steps see it, not a random
        // container id).
        let name = if on(Variation::Hostname) {
            VARIED_HOSTNAME
        } else {
            CONTROL_HOSTNAME
        };
        let mut command = Command::new("unshare");
        command
            .args(["--uts", "sh", "-c"])
            .arg(format!("hostname {name} && umask {umask} && exec \"$@\""))
            .env(BUILDER_UTS_ENV, "host");
        command
    } else {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$@\""))
            .env_remove(BUILDER_UTS_ENV);
        command
    };
    command.arg("sh");
    if on(Variation::Time) {
        if let Some(faketime) = &host.faketime {
            command.arg(faketime).args(["-f", FAKETIME_OFFSET]);
        }
    }
    if on(Variation::Cpus) && host.cpus > 1 {
        if let Some(taskset) = &host.taskset {
            command.arg(taskset).args(["-c", "0"]);
        }
    }
    command.arg(exe).args(build_args);
    let tz = if on(Variation::Tz) { VARIED_TZ } else { "UTC" };
    let locale = if on(Variation::Locale) {
        VARIED_LOCALE
    } else {
        "C.UTF-8"
    };
    command
        .env("TZ", tz)
        .env("LANG", locale)
        .env("LC_ALL", locale);
    if on(Variation::Environment) {
        command
            .env("CAPTURE_ENVIRONMENT", "i_capture_the_environment")
            .env("STAGEX_REPRODUCE_NOISE", "varied build");
    } else {
        command
            .env_remove("CAPTURE_ENVIRONMENT")
            .env_remove("STAGEX_REPRODUCE_NOISE");
    }
    command
}

/// The output root of one build under `work`: the varied one is deeper
/// and named differently when the build path is varied.
pub fn build_root(work: &Path, builder: &str, varied: bool, set: &VarySet) -> PathBuf {
    let dir = work.join(builder);
    match (varied, set.contains(Variation::BuildPath)) {
        (false, _) => dir.join("control"),
        (true, true) => dir.join("varied-build-path/a/deeper/root"),
        (true, false) => dir.join("varied"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_turns_variations_off_and_on() {
        let set = VarySet::parse(&["-time,-umask".to_string()]).unwrap();
        assert!(!set.contains(Variation::Time));
        assert!(!set.contains(Variation::Umask));
        assert!(set.contains(Variation::Tz));
        let set = VarySet::parse(&["none".into(), "+build-path".into()]).unwrap();
        assert!(set.contains(Variation::BuildPath));
        assert!(!set.contains(Variation::Tz));
        let err = VarySet::parse(&["-kernel".into()]).unwrap_err();
        assert!(err.to_string().contains("\"kernel\""), "{err}");
    }

    #[test]
    fn hostname_is_not_applicable_and_says_why() {
        let host = Host {
            faketime: None,
            taskset: None,
            cpus: 1,
            uts_namespace: false,
        };
        let all = applicability(&VarySet::default(), BuilderChoice::Native, &host);
        let get = |name: &str| all.iter().find(|a| a.variation == name).unwrap();
        assert_eq!(get("hostname").state, "not applicable");
        assert_eq!(get("cpus").state, "not applicable");
        assert_eq!(get("umask").state, "applied");
        let off = VarySet::parse(&["-umask".into()]).unwrap();
        let all = applicability(&off, BuilderChoice::Buildah, &host);
        assert_eq!(
            all.iter().find(|a| a.variation == "umask").unwrap().state,
            "off"
        );
    }
}
