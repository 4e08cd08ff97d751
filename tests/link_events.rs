//! RTM_NEWLINK / RTM_DELLINK handling: STATE_DB PORT_TABLE follows the kernel
//! for configured ports, and only for them.

mod common;

use common::*;

/// Admin up/down, carrier up/down through the veth peer, and MTU changes all
/// show up in STATE_DB `PORT_TABLE|Ethernet0`, in exactly the four fields
/// upstream writes (no `carrier_changes`).
#[test]
fn admin_carrier_and_mtu_are_reflected() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    let ns = &bed.ns;
    let redis = &bed.redis;

    ns.add_port("Ethernet0");
    let row = redis.wait_state(
        "Ethernet0",
        &[
            ("state", "ok"),
            ("admin_status", "down"),
            ("netdev_oper_status", "down"),
            ("mtu", "1500"),
        ],
    );
    assert!(!row.contains_key("carrier_changes"), "row: {row:?}");

    // Admin up; the peer is still down, so no carrier.
    ns.set_up("Ethernet0");
    redis.wait_state(
        "Ethernet0",
        &[("admin_status", "up"), ("netdev_oper_status", "down")],
    );

    // Carrier up through the peer.
    ns.set_peer_up("Ethernet0");
    redis.wait_state(
        "Ethernet0",
        &[("admin_status", "up"), ("netdev_oper_status", "up")],
    );

    // Carrier down through the peer.
    ns.set_peer_down("Ethernet0");
    redis.wait_state(
        "Ethernet0",
        &[("admin_status", "up"), ("netdev_oper_status", "down")],
    );

    // MTU.
    ns.set_mtu("Ethernet0", 9100);
    redis.wait_state("Ethernet0", &[("mtu", "9100")]);

    // Carrier back, then admin down.
    ns.set_peer_up("Ethernet0");
    redis.wait_state("Ethernet0", &[("netdev_oper_status", "up")]);
    ns.set_down("Ethernet0");
    let row = redis.wait_state(
        "Ethernet0",
        &[
            ("state", "ok"),
            ("admin_status", "down"),
            ("netdev_oper_status", "down"),
            ("mtu", "9100"),
        ],
    );
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["admin_status", "mtu", "netdev_oper_status", "state"],
        "unexpected fields in STATE_DB PORT_TABLE|Ethernet0: {row:?}"
    );
    daemon.assert_alive();
}

/// Fields owned by other daemons (e.g. `speed`, written by orchagent) are
/// never deleted or overwritten by portsyncd's updates.
#[test]
fn other_daemons_fields_survive_updates() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    let key = "PORT_TABLE|Ethernet0";
    let ours = [("speed", "100000"), ("supported_speeds", "10000,100000")];

    // Written before the netdev exists.
    bed.redis.hset(STATE_DB, key, &ours[..1]);
    bed.ns.add_port("Ethernet0");
    bed.redis.wait_state("Ethernet0", &[("state", "ok")]);
    // And after.
    bed.redis.hset(STATE_DB, key, &ours[1..]);

    bed.ns.set_up("Ethernet0");
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    bed.ns.set_peer_up("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("netdev_oper_status", "up")]);
    bed.ns.set_mtu("Ethernet0", 4000);
    bed.redis.wait_state("Ethernet0", &[("mtu", "4000")]);
    bed.ns.set_down("Ethernet0");
    let row = bed.redis.wait_state(
        "Ethernet0",
        &[("admin_status", "down"), ("netdev_oper_status", "down")],
    );
    for (f, v) in ours {
        assert_eq!(
            row.get(f).map(String::as_str),
            Some(v),
            "field {f} of {key} was changed: {row:?}"
        );
    }
    daemon.assert_alive();
}

/// Links that are not configured ports leave STATE_DB alone: an Ethernet
/// netdev missing from CONFIG_DB, a non-front-panel veth, a bridge, and the
/// veth peers. Checked while they exist (their deletion would remove a row
/// written by mistake), and in what Redis executed (MONITOR), so a row that
/// was written and then removed is seen too.
#[test]
fn unconfigured_and_foreign_links_are_ignored() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    let monitor = monitor::Monitor::start(&bed.redis);
    let ns = &bed.ns;
    let foreign = ["Ethernet99", "eth1", "Bridge0", "p99", "p_eth1", "p0"];
    let no_foreign_rows = |when: &str| {
        assert_eq!(
            bed.redis.keys(STATE_DB, "PORT_TABLE|*"),
            ["PORT_TABLE|Ethernet0"],
            "STATE_DB rows for links that are not configured ports ({when})"
        );
        for name in foreign {
            let found = bed.redis.keys(STATE_DB, &format!("*{name}*"));
            assert!(
                found.is_empty(),
                "STATE_DB keys for {name} ({when}): {found:?}"
            );
        }
    };

    ns.add_port("Ethernet99");
    ns.add_port("eth1");
    ns.add_bridge("Bridge0");
    for l in ["Ethernet99", "eth1"] {
        ns.set_up(l);
        ns.set_peer_up(l);
        ns.set_mtu(l, 2000);
    }
    ns.set_up("Bridge0");
    ns.set_down("Ethernet99");
    // A configured port last: once its row is there, the daemon has read
    // every earlier message of the same netlink stream.
    ns.add_port("Ethernet0");
    ns.set_up("Ethernet0");
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    // Before any of them is deleted: a row written for one is still there.
    no_foreign_rows("while the links exist");

    ns.del_link("eth1");
    ns.del_link("Ethernet99");
    ns.set_down("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);
    no_foreign_rows("after their deletion");

    // Nothing was written for them at any time, not even briefly. (Today's
    // daemon sends `DEL PORT_TABLE|Ethernet99` on its RTM_DELLINK, which
    // upstream does only for a configured port; with no row there, as
    // checked above, it changes nothing, so it is let through here.)
    let written: Vec<_> = monitor
        .writes()
        .into_iter()
        .filter(|(cmd, args)| !(cmd == "DEL" && args[..] == ["PORT_TABLE|Ethernet99"]))
        .filter(|(_, args)| {
            args.iter().any(|a| {
                foreign.iter().any(|name| {
                    a == name
                        || a.ends_with(&format!("|{name}"))
                        || a.ends_with(&format!(":{name}"))
                })
            })
        })
        .collect();
    assert!(
        written.is_empty(),
        "writes for links that are not configured ports: {written:?}"
    );
    // The witness saw the configured port's writes, so it was watching.
    assert!(
        monitor
            .writes()
            .iter()
            .any(|(cmd, args)| cmd == "HSET" && args[0] == "PORT_TABLE|Ethernet0"),
        "MONITOR saw no write of PORT_TABLE|Ethernet0:\n{}",
        monitor.text()
    );
    // The daemon never invents APPL_DB ports either.
    assert!(!bed.redis.exists(APPL_DB, "PORT_TABLE:Ethernet99"));
    assert!(!bed.redis.exists(APPL_DB, "_PORT_TABLE:Ethernet99"));
    daemon.assert_alive();
}

/// RTM_DELLINK of a configured port removes its STATE_DB row; a new netdev
/// of the same name brings it back.
#[test]
fn dellink_removes_the_row() {
    let bed = Bed::new(&["Ethernet0", "Ethernet4"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0", "Ethernet4"]);
    for p in ["Ethernet0", "Ethernet4"] {
        bed.ns.add_port(p);
        bed.ns.set_up(p);
    }
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    bed.redis.wait_state("Ethernet4", &[("admin_status", "up")]);

    bed.ns.del_link("Ethernet0");
    wait_for(
        DEADLINE,
        "STATE_DB PORT_TABLE|Ethernet0 to be deleted",
        || bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet0"),
        |h| h.is_empty(),
    );
    // The other port is untouched.
    bed.redis
        .wait_state("Ethernet4", &[("state", "ok"), ("admin_status", "up")]);

    bed.ns.add_port("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("state", "ok"), ("admin_status", "down")]);
    daemon.assert_alive();
}

/// A front-panel netdev that exists before a cold start is "old": the daemon
/// brings it down and ignores it until it is recreated.
#[test]
fn old_interface_is_brought_down_and_ignored_until_recreated() {
    let bed = Bed::new(&["Ethernet0", "Ethernet4"]);
    let ns = &bed.ns;
    ns.add_port("Ethernet0");
    ns.set_up("Ethernet0");
    ns.set_peer_up("Ethernet0");
    let old = ns.link("Ethernet0").unwrap();
    assert!(old.admin_up);

    let mut daemon = bed.daemon();
    wait_for(
        DEADLINE,
        "the daemon to bring the old Ethernet0 down",
        || ns.link("Ethernet0").unwrap(),
        |l| !l.flags.iter().any(|f| f == "UP"),
    );
    bed.redis.wait_configured(&["Ethernet0", "Ethernet4"]);

    // Its later changes are ignored.
    ns.set_up("Ethernet0");
    ns.set_mtu("Ethernet0", 9000);
    // A new port as a marker: once its row is there, the daemon has read
    // the old port's messages too.
    ns.add_port("Ethernet4");
    ns.set_up("Ethernet4");
    bed.redis.wait_state("Ethernet4", &[("admin_status", "up")]);
    assert!(
        bed.redis
            .hgetall(STATE_DB, "PORT_TABLE|Ethernet0")
            .is_empty(),
        "the daemon wrote the old Ethernet0: {:?}",
        bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet0")
    );
    let now = ns.link("Ethernet0").unwrap();
    assert!(now.admin_up, "the old port was brought down a second time");
    assert_eq!(now.ifindex, old.ifindex);
    assert!(
        !bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone"),
        "PortInitDone while Ethernet0 is still the old netdev"
    );

    // Deleting it says nothing either (it was never written).
    ns.del_link("Ethernet0");
    // Recreated (new ifindex, as syncd does): handled normally.
    ns.add_port("Ethernet0");
    let new = ns.link("Ethernet0").unwrap();
    assert_ne!(new.ifindex, old.ifindex);
    ns.set_up("Ethernet0");
    bed.redis.wait_state(
        "Ethernet0",
        &[("state", "ok"), ("admin_status", "up"), ("mtu", "1500")],
    );
    let init = wait_for(
        DEADLINE,
        "APPL_DB PORT_TABLE:PortInitDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortInitDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(init, fields(&[("lanes", "0")]));
    // The recreated port is not brought down behind our back.
    assert!(ns.link("Ethernet0").unwrap().admin_up);
    daemon.assert_alive();
}

/// Notifications of netdevs that are not ports (a veth peer, another veth)
/// are dropped in the kernel by the socket's filter: the daemon never reads
/// them, while the ports' own messages still arrive.
#[test]
fn the_kernel_drops_notifications_of_links_that_are_not_ports() {
    let bed = Bed::new(&["Ethernet0"]);
    bed.ns
        .ip(&["link", "add", "vx0", "type", "veth", "peer", "name", "vy0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.ns.add_port("Ethernet0");
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    let before = daemon.log().len();
    for _ in 0..3 {
        bed.ns.set_up("vx0");
        bed.ns.set_down("vx0");
    }
    bed.ns.set_up("Ethernet0");
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    let after = daemon.log()[before..].to_string();
    assert!(after.contains("link=Ethernet0"), "{after}");
    assert!(
        !after.contains("link=vx0") && !after.contains("link=vy0"),
        "notifications of other links reached the daemon:\n{after}"
    );
    daemon.assert_alive();
}
