//! Checks of the test harness itself (no daemon involved): the private Redis
//! survives a save/restart, the consumer script pops the producer protocol
//! the way orchagent does, and namespaces report what the kernel says.

mod common;

use common::*;

/// Writes `set(k, fields)` the way swss-common's ProducerStateTable does.
fn producer_set(con: &mut redis::Connection, key: &str, fv: &[(&str, &str)]) {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("SADD").arg("PORT_TABLE_KEY_SET").arg(key);
    let mut hset = redis::cmd("HSET");
    hset.arg(format!("_PORT_TABLE:{key}"));
    for (f, v) in fv {
        hset.arg(*f).arg(*v);
    }
    pipe.add_command(hset);
    pipe.cmd("PUBLISH").arg("PORT_TABLE_CHANNEL@0").arg("G");
    pipe.exec(con).expect("producer set");
}

fn producer_del(con: &mut redis::Connection, key: &str) {
    redis::pipe()
        .atomic()
        .cmd("SADD")
        .arg("PORT_TABLE_KEY_SET")
        .arg(key)
        .cmd("SADD")
        .arg("PORT_TABLE_DEL_SET")
        .arg(key)
        .cmd("DEL")
        .arg(format!("_PORT_TABLE:{key}"))
        .exec(con)
        .expect("producer del");
}

#[test]
fn consumer_script_follows_the_producer_protocol() {
    let redis = RedisServer::start();
    let mut con = redis.con(APPL_DB);
    producer_set(&mut con, "Ethernet0", &[("lanes", "0,1"), ("mtu", "9100")]);
    producer_set(&mut con, "Ethernet4", &[("lanes", "4,5")]);

    let n: i64 = redis::cmd("EVAL")
        .arg(CONSUMER_LUA)
        .arg(0)
        .arg("PORT_TABLE")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet0"),
        fields(&[("lanes", "0,1"), ("mtu", "9100")])
    );
    assert_eq!(
        redis.keys(APPL_DB, "*"),
        ["PORT_TABLE:Ethernet0", "PORT_TABLE:Ethernet4"]
    );

    // A set merges fields; a del then set replaces the whole entry.
    producer_set(&mut con, "Ethernet0", &[("mtu", "1500"), ("speed", "1000")]);
    producer_del(&mut con, "Ethernet4");
    producer_set(&mut con, "Ethernet4", &[("alias", "x")]);
    let consumer = Consumer::start(redis.socket());
    wait_until(DEADLINE, "the consumer to pop", || {
        redis.keys(APPL_DB, "*").len() == 2
    });
    assert_eq!(
        redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet0"),
        fields(&[("lanes", "0,1"), ("mtu", "1500"), ("speed", "1000")])
    );
    assert_eq!(
        redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet4"),
        fields(&[("alias", "x")])
    );
    assert!(consumer.popped() >= 2);

    // A plain del.
    producer_del(&mut con, "Ethernet0");
    wait_until(DEADLINE, "the consumer to delete Ethernet0", || {
        redis.keys(APPL_DB, "*") == ["PORT_TABLE:Ethernet4"]
    });
}

#[test]
fn redis_restart_keeps_data_and_consumer_reconnects() {
    let mut redis = RedisServer::start();
    redis.hset(STATE_DB, "PORT_TABLE|Ethernet0", &[("speed", "1")]);
    let consumer = Consumer::start(redis.socket());
    let first = redis.pid().unwrap();
    redis.stop_saving();
    assert!(redis.pid().is_none());
    assert!(redis.try_con(0).is_err());
    redis.start_again();
    assert_ne!(redis.pid().unwrap(), first);
    assert_eq!(
        redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet0"),
        fields(&[("speed", "1")])
    );
    let mut con = redis.con(APPL_DB);
    producer_set(&mut con, "Ethernet8", &[("a", "b")]);
    wait_until(DEADLINE, "the consumer to pop after the restart", || {
        redis.exists(APPL_DB, "PORT_TABLE:Ethernet8")
    });
    drop(consumer);
}

#[test]
fn netns_reports_admin_carrier_and_mtu() {
    let ns = Netns::new();
    ns.add_port("Ethernet0");
    let l = ns.link("Ethernet0").unwrap();
    assert!(!l.admin_up && !l.oper_up);
    assert_eq!(l.mtu, 1500);
    ns.set_up("Ethernet0");
    wait_for(
        DEADLINE,
        "Ethernet0 admin up, no carrier",
        || ns.link("Ethernet0").unwrap(),
        |l| l.admin_up && !l.oper_up,
    );
    ns.set_peer_up("Ethernet0");
    wait_for(
        DEADLINE,
        "Ethernet0 carrier",
        || ns.link("Ethernet0").unwrap(),
        |l| l.oper_up,
    );
    ns.batch(&["link set dev Ethernet0 mtu 9100", "link set dev p0 down"]);
    wait_for(
        DEADLINE,
        "Ethernet0 carrier down",
        || ns.link("Ethernet0").unwrap(),
        |l| l.admin_up && !l.oper_up && l.mtu == 9100,
    );
    assert!(ns.links().contains_key("p0"));
    assert_eq!(ns.carrier_changes("Ethernet0"), "3");
    let name = ns.name().to_string();
    drop(ns);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}
