//! A table of bad inputs (environment and network configuration): each must give the
//! spec's error code (4 env, 6 undecodable, 7 config, 1 version) with a message naming
//! the variable or field (and its value), and leave the host exactly as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Lab, can_run, links};
use serde_json::{Value, json};

/// How a case changes the good ADD invocation.
enum Mutation {
    /// Set (Some) or unset (None) an environment variable.
    Env(&'static str, Option<String>),
    /// Set (non-null) or remove (null) a top-level config field.
    Conf(&'static str, Value),
    /// Replace stdin entirely.
    Stdin(&'static str),
}

struct Case {
    what: &'static str,
    muts: Vec<Mutation>,
    code: u64,
    /// Texts the message must contain (field path / variable, value).
    names: Vec<String>,
}

fn case(what: &'static str, muts: Vec<Mutation>, code: u64, names: &[&str]) -> Case {
    Case {
        what,
        muts,
        code,
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

use Mutation::{Conf, Env, Stdin};

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn bad_inputs_table() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(2);
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let pf_pci = lab.sim.pf_address(0);
    let long_id = "a".repeat(201);
    let cases = vec![
        // environment: code 4
        case(
            "no CNI_COMMAND",
            vec![Env("CNI_COMMAND", None)],
            4,
            &["CNI_COMMAND", "missing"],
        ),
        case(
            "bad CNI_COMMAND",
            vec![Env("CNI_COMMAND", s("FOO"))],
            4,
            &["CNI_COMMAND", "FOO"],
        ),
        case(
            "no CNI_CONTAINERID",
            vec![Env("CNI_CONTAINERID", None)],
            4,
            &["CNI_CONTAINERID"],
        ),
        case(
            "containerid ..",
            vec![Env("CNI_CONTAINERID", s("../../etc"))],
            4,
            &["CNI_CONTAINERID", "../../etc"],
        ),
        case(
            "containerid /",
            vec![Env("CNI_CONTAINERID", s("a/b"))],
            4,
            &["CNI_CONTAINERID", "a/b"],
        ),
        case(
            "containerid too long",
            vec![Env("CNI_CONTAINERID", Some(long_id.clone()))],
            4,
            &["CNI_CONTAINERID", "200"],
        ),
        case(
            "containerid leading dash",
            vec![Env("CNI_CONTAINERID", s("-x"))],
            4,
            &["CNI_CONTAINERID", "-x"],
        ),
        case(
            "no CNI_IFNAME",
            vec![Env("CNI_IFNAME", None)],
            4,
            &["CNI_IFNAME"],
        ),
        case(
            "ifname /",
            vec![Env("CNI_IFNAME", s("net/1"))],
            4,
            &["CNI_IFNAME", "net/1"],
        ),
        case(
            "ifname ..",
            vec![Env("CNI_IFNAME", s(".."))],
            4,
            &["CNI_IFNAME", ".."],
        ),
        case(
            "ifname 16 bytes",
            vec![Env("CNI_IFNAME", s("abcdefghijklmnop"))],
            4,
            &["CNI_IFNAME", "15"],
        ),
        case(
            "ifname space",
            vec![Env("CNI_IFNAME", s("net 1"))],
            4,
            &["CNI_IFNAME", "net 1"],
        ),
        case(
            "no CNI_NETNS on ADD",
            vec![Env("CNI_NETNS", None)],
            4,
            &["CNI_NETNS", "missing"],
        ),
        case(
            "relative CNI_NETNS",
            vec![Env("CNI_NETNS", s("run/netns/x"))],
            4,
            &["CNI_NETNS", "absolute"],
        ),
        case(
            "missing netns",
            vec![Env("CNI_NETNS", s("/run/netns/sriovt-none"))],
            4,
            &["CNI_NETNS", "sriovt-none"],
        ),
        case(
            "netns is a plain file",
            vec![Env("CNI_NETNS", s("/etc/hostname"))],
            4,
            &["CNI_NETNS", "/etc/hostname"],
        ),
        case(
            "bad CNI_ARGS",
            vec![Env("CNI_ARGS", s("IgnoreUnknown"))],
            4,
            &["CNI_ARGS", "KEY=VALUE"],
        ),
        case(
            "no CNI_PATH with ipam",
            vec![Env("CNI_PATH", None)],
            4,
            &["CNI_PATH", "host-local"],
        ),
        // undecodable / version
        case("stdin not JSON", vec![Stdin("{not json")], 6, &["decode"]),
        case(
            "stdin an array",
            vec![Stdin("[1,2]")],
            6,
            &["not a JSON object"],
        ),
        case(
            "unsupported cniVersion",
            vec![Conf("cniVersion", json!("0.2.0"))],
            1,
            &["0.2.0", "1.1.0"],
        ),
        case(
            "unknown cniVersion",
            vec![Conf("cniVersion", json!("9.9.9"))],
            1,
            &["9.9.9"],
        ),
        // configuration: code 7
        case(
            "no cniVersion",
            vec![Conf("cniVersion", Value::Null)],
            7,
            &["cniVersion", "missing"],
        ),
        case(
            "numeric cniVersion",
            vec![Conf("cniVersion", json!(1))],
            7,
            &["cniVersion=1"],
        ),
        case(
            "no name",
            vec![Conf("name", Value::Null)],
            7,
            &["name", "missing"],
        ),
        case(
            "bad name",
            vec![Conf("name", json!("bad name!"))],
            7,
            &["name=\"bad name!\""],
        ),
        case(
            "no deviceID",
            vec![Conf("deviceID", Value::Null)],
            7,
            &["deviceID", "missing"],
        ),
        case(
            "malformed deviceID",
            vec![Conf("deviceID", json!("zz:zz.z"))],
            7,
            &["deviceID=\"zz:zz.z\""],
        ),
        case(
            "absent deviceID",
            vec![Conf("deviceID", json!("0000:99:00.1"))],
            7,
            &["deviceID", "0000:99:00.1", "no such PCI device"],
        ),
        case(
            "deviceID is the PF",
            vec![Conf("deviceID", json!(pf_pci.clone()))],
            7,
            &["deviceID", "not an SR-IOV VF"],
        ),
        case(
            "bad pciBusID",
            vec![
                Conf("deviceID", Value::Null),
                Conf("pciBusID", json!("3b:00")),
            ],
            7,
            &["pciBusID=\"3b:00\""],
        ),
        case(
            "vlan 4095",
            vec![Conf("vlan", json!(4095))],
            7,
            &["vlan=4095", "4094"],
        ),
        case("vlan -1", vec![Conf("vlan", json!(-1))], 7, &["vlan=-1"]),
        case(
            "vlan as string",
            vec![Conf("vlan", json!("100"))],
            7,
            &["vlan=\"100\"", "integer"],
        ),
        case(
            "vlanQoS 8",
            vec![Conf("vlan", json!(5)), Conf("vlanQoS", json!(8))],
            7,
            &["vlanQoS=8"],
        ),
        case(
            "vlanQoS without vlan",
            vec![Conf("vlan", Value::Null), Conf("vlanQoS", json!(3))],
            7,
            &["vlanQoS=3", "vlan"],
        ),
        case(
            "bad vlanProto",
            vec![Conf("vlan", json!(5)), Conf("vlanProto", json!("802.1x"))],
            7,
            &["vlanProto=\"802.1x\""],
        ),
        case(
            "802.1ad without vlan",
            vec![
                Conf("vlan", Value::Null),
                Conf("vlanProto", json!("802.1ad")),
            ],
            7,
            &["vlanProto", "802.1ad"],
        ),
        case(
            "bad mac",
            vec![Conf("mac", json!("not-a-mac"))],
            7,
            &["mac=\"not-a-mac\""],
        ),
        case(
            "multicast mac",
            vec![Conf("mac", json!("01:00:5e:00:00:01"))],
            7,
            &["mac=\"01:00:5e:00:00:01\"", "multicast"],
        ),
        case(
            "zero mac",
            vec![Conf("mac", json!("00:00:00:00:00:00"))],
            7,
            &["mac=", "all-zero"],
        ),
        case(
            "bad runtimeConfig.mac",
            vec![Conf("runtimeConfig", json!({"mac": "xx"}))],
            7,
            &["runtimeConfig.mac=\"xx\""],
        ),
        case(
            "runtimeConfig not object",
            vec![Conf("runtimeConfig", json!(5))],
            7,
            &["runtimeConfig=5"],
        ),
        case(
            "spoofchk yes",
            vec![Conf("spoofchk", json!("yes"))],
            7,
            &["spoofchk=\"yes\"", "on, off"],
        ),
        case(
            "trust bool",
            vec![Conf("trust", json!(true))],
            7,
            &["trust=true"],
        ),
        case(
            "link_state up",
            vec![Conf("link_state", json!("up"))],
            7,
            &["link_state=\"up\""],
        ),
        case(
            "min > max rate",
            vec![
                Conf("min_tx_rate", json!(500)),
                Conf("max_tx_rate", json!(100)),
            ],
            7,
            &["min_tx_rate=500", "max_tx_rate"],
        ),
        case(
            "negative max rate",
            vec![Conf("max_tx_rate", json!(-5))],
            7,
            &["max_tx_rate=-5"],
        ),
        case("mtu 10", vec![Conf("mtu", json!(10))], 7, &["mtu=10"]),
        case(
            "logLevel loud",
            vec![Conf("logLevel", json!("loud"))],
            7,
            &["logLevel=\"loud\""],
        ),
        case(
            "relative logFile",
            vec![Conf("logFile", json!("sriov.log"))],
            7,
            &["logFile=\"sriov.log\""],
        ),
        case(
            "ipam a string",
            vec![Conf("ipam", json!("host-local"))],
            7,
            &["ipam=\"host-local\""],
        ),
        case(
            "ipam without type",
            vec![Conf("ipam", json!({"subnet": "10.0.0.0/24"}))],
            7,
            &["ipam.type", "missing"],
        ),
        case(
            "ipam type with path",
            vec![Conf("ipam", json!({"type": "../../bin/sh"}))],
            7,
            &["ipam.type=\"../../bin/sh\""],
        ),
        case(
            "ipam type not in CNI_PATH",
            vec![Conf("ipam", json!({"type": "no-such-ipam"}))],
            7,
            &["ipam.type", "no-such-ipam", "CNI_PATH"],
        ),
        case(
            "bad prevResult",
            vec![Conf(
                "prevResult",
                json!({"ips": [{"address": "10.0.0.1"}]}),
            )],
            7,
            &["prevResult.ips[0].address"],
        ),
    ];
    assert!(cases.len() >= 30, "{}", cases.len());
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[pod].name);
    for c in &cases {
        let mut env: Vec<(String, Option<String>)> = vec![
            ("CNI_COMMAND".into(), s("ADD")),
            ("CNI_CONTAINERID".into(), s("bad")),
            ("CNI_IFNAME".into(), s("net1")),
            ("CNI_NETNS".into(), Some(ns.clone())),
        ];
        let mut conf = lab.conf("1.0.0", 0, json!({"vlan": 10}));
        let mut stdin: Option<&str> = None;
        for m in &c.muts {
            match m {
                Env(k, v) => {
                    env.retain(|(n, _)| n != k);
                    env.push((k.to_string(), v.clone()));
                }
                Conf(k, v) => {
                    if v.is_null() {
                        conf.as_object_mut().unwrap().remove(*k);
                    } else {
                        conf[*k] = v.clone();
                    }
                }
                Stdin(t) => stdin = Some(t),
            }
        }
        // CNI_PATH is set by the lab; an explicit None blanks it.
        let pairs: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("")))
            .collect();
        let input = match stdin {
            Some(t) => Value::String(t.to_string()),
            None => conf.clone(),
        };
        let r = if stdin.is_some() {
            lab.run_raw(&pairs, stdin.unwrap_or(""))
        } else {
            lab.run_env(&pairs, &input)
        };
        assert_ne!(r.code, 0, "{}: accepted: {}", c.what, r.stdout);
        assert_eq!(r.err_code(), c.code, "{}: {}", c.what, r.stdout);
        for n in &c.names {
            assert!(
                r.msg().contains(n.as_str()),
                "{}: message {:?} lacks {n:?}",
                c.what,
                r.msg()
            );
        }
        assert!(r.out["cniVersion"].is_string(), "{}: {}", c.what, r.stdout);
        assert_eq!(
            r.stdout.trim().lines().count(),
            1,
            "{}: stdout carries only the error JSON",
            c.what
        );
        assert_eq!(lab.snapshot(), before, "{}: host changed", c.what);
        assert_eq!(
            links(&lab.pods[pod].name),
            pod_before,
            "{}: pod changed",
            c.what
        );
    }
    // The fake saw no VF call at all: nothing was touched before validation finished.
    assert!(
        lab.fake().calls.iter().all(|c| !c.starts_with("set ")),
        "{:?}",
        lab.fake().calls
    );
}

#[test]
fn version_and_command_version_rules() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(1);
    let r = lab.run_env(
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "0.4.0"}),
    );
    let v = r.ok();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // GC needs its attachment list; STATUS/GC need 1.1.0.
    let mut gc = lab.conf("1.1.0", 0, json!({}));
    let r = lab.run_env(&[("CNI_COMMAND", "GC")], &gc);
    assert_eq!(r.err_code(), 7);
    assert!(r.msg().contains("cni.dev/valid-attachments"), "{}", r.msg());
    gc["cniVersion"] = json!("1.0.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    let r = lab.run_env(&[("CNI_COMMAND", "GC")], &gc);
    assert_eq!(r.err_code(), 1);
    assert_eq!(r.out["cniVersion"], "1.0.0");
}
