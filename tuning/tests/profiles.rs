//! Every profile file loads with the real config loaders (which reject unknown keys), every
//! knob carries a comment, and the three files agree with each other and with the profile's
//! rules (cores, connections, minimums).

use tuning::profile::{PROFILES, Profile};
use tuning::sysctl;

fn entry(p: &Profile, key: &str) -> tuning::profile::SysctlEntry {
    p.sysctls()
        .unwrap()
        .into_iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{}: no {key}", p.name))
}

#[test]
fn every_profile_loads_with_the_real_loaders() {
    assert_eq!(
        PROFILES.iter().map(|p| p.name).collect::<Vec<_>>(),
        ["laptop", "16core", "64core-2socket"]
    );
    for p in PROFILES {
        let g = p.gateway().unwrap_or_else(|e| panic!("{e}"));
        p.dispatcher().unwrap_or_else(|e| panic!("{e}"));
        // The compiled-in text is the file on disk.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("profiles")
            .join(p.name);
        for (file, text) in [
            ("gateway.toml", p.gateway_toml),
            ("dispatcher.toml", p.dispatcher_toml),
            ("sysctl.conf", p.sysctl_conf),
        ] {
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), text);
        }
        // The loaders deny unknown keys, so a misspelt knob in a profile cannot slip through.
        let bad = format!("{}\nnot_a_knob = 1\n", p.gateway_toml);
        assert!(gateway::Config::from_toml(&bad).is_err());
        let bad = format!("not_a_knob = 1\n{}", p.dispatcher_toml);
        assert!(dispatcher::Config::from_toml(&bad).is_err());
        // Rings enough for the profile's connections.
        let capacity = g.cores.len() as u64
            * g.engine.max_rings_per_shard as u64
            * u64::from(g.engine.slots_per_ring);
        assert!(capacity >= p.connections, "{}: {capacity}", p.name);
    }
}

#[test]
fn cores_match_the_profile_names() {
    let want = [("laptop", 2), ("16core", 16), ("64core-2socket", 64)];
    for (name, cores) in want {
        let p = tuning::profile::named(name).unwrap();
        assert_eq!(p.total_cores().unwrap(), cores, "{name}");
    }
    assert_eq!(tuning::profile::for_cores(2).name, "laptop");
    assert_eq!(tuning::profile::for_cores(4).name, "laptop");
    assert_eq!(tuning::profile::for_cores(5).name, "16core");
    assert_eq!(tuning::profile::for_cores(32).name, "16core");
    assert_eq!(tuning::profile::for_cores(33).name, "64core-2socket");
    let err = tuning::profile::named("8core").unwrap_err().to_string();
    assert!(err.contains("\"8core\"") && err.contains("16core"), "{err}");
}

#[test]
fn sysctl_minimums_cover_the_profiles_connections() {
    for p in PROFILES {
        let entries = p.sysctls().unwrap_or_else(|e| panic!("{e}"));
        for key in sysctl::KEYS {
            assert!(
                entries.iter().any(|e| e.key == *key),
                "{}: {key} missing",
                p.name
            );
        }
        // Each socket is a struct file; conntrack takes an entry per connection and side.
        for key in ["fs.file-max", "net.netfilter.nf_conntrack_max"] {
            let min = entry(p, key)
                .minimum
                .unwrap_or_else(|| panic!("{key}: no minimum"));
            assert!(min[0] >= p.sockets(), "{}: {key} {min:?}", p.name);
        }
        for key in ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"] {
            assert!(entry(p, key).minimum.is_some(), "{}: {key}", p.name);
        }
        // The gateway's listen backlog is what somaxconn caps.
        let backlog = p.gateway().unwrap().engine.backlog as u64;
        assert!(entry(p, "net.core.somaxconn").value[0] >= backlog);
    }
}

#[test]
fn every_knob_is_commented() {
    for p in PROFILES {
        for (file, text) in [
            ("gateway.toml", p.gateway_toml),
            ("dispatcher.toml", p.dispatcher_toml),
            ("sysctl.conf", p.sysctl_conf),
        ] {
            // A setting must follow a comment, or another setting of the same commented group.
            let mut commented = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with('#') {
                    commented = true;
                } else if line.is_empty() || line.starts_with('[') {
                    commented = false;
                } else {
                    assert!(commented, "{}/{file}: {line:?} has no comment", p.name);
                }
            }
        }
    }
}

#[test]
fn malformed_sysctl_profiles_name_the_line() {
    let base = tuning::profile::named("laptop").unwrap();
    for (text, want) in [
        ("net.core.somaxconn = 1\n", "no `# check:` line"),
        (
            "# check: x\nnet.core.nothing = 1\n",
            "not a sysctl the check reads",
        ),
        (
            "# check: minimum many; x\nnet.core.somaxconn = 1\n",
            "line 1: minimum",
        ),
        (
            "# check: minimum 10; x\nnet.core.somaxconn = 1\n",
            "below the minimum",
        ),
        (
            "# check: x\nnet.core.somaxconn = lots\n",
            "line 2: net.core.somaxconn",
        ),
    ] {
        let p = Profile {
            sysctl_conf: text,
            ..*base
        };
        let err = p.sysctls().unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("sysctl.conf"), "{err}");
    }
}
