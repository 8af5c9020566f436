//! `cairn pg backup | restore | drill` against a real PostgreSQL server: a
//! throwaway cluster started once for this test binary, a fresh database
//! per test.

#[path = "support/pg.rs"]
mod pgsupport;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgsupport::{PASSWORD, PASSWORD_ROLE, Pg};
use support::{Env, fails, ok, run, stderr};

/// A cairn command on `env`'s repository with no PG* settings inherited.
fn cairn(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            c.env_remove(k);
        }
    }
    c
}

fn fixture(pg: &Pg, db: &str) {
    pg.psql_file(db, &support::root().join("tests/support/pg_fixture.sql"));
}

fn manifest(env: &Env, snapshot: &str) -> serde_json::Value {
    let out = ok(run(&mut cairn(env, &["dump", snapshot, "/manifest.json"])));
    serde_json::from_str(&out).expect("manifest JSON")
}

fn table_rows(manifest: &serde_json::Value, schema: &str, name: &str) -> u64 {
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == schema && t["name"] == name)
        .unwrap_or_else(|| panic!("{schema}.{name} not in the manifest"))["rows"]
        .as_u64()
        .unwrap()
}

fn json_line(out: &str, message_type: &str) -> serde_json::Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == message_type)
        .unwrap_or_else(|| panic!("no {message_type} line in {out}"))
}

#[test]
fn round_trip_is_identical_and_drill_passes() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("rt");
    fixture(pg, &db);

    let out =
        ok(run(&mut cairn(&env, &["--json", "pg", "backup", "-d", &pg.conn(&db), "--jobs", "2", "--tag", "nightly"])));
    let summary = json_line(&out, "summary");
    assert_eq!(summary["rows"], 1_000_000 + 3 + 1000 + 2 + 2 + 2 + 500 + 2 + 2);
    assert_eq!(summary["large_objects"], 2);
    let snaps: serde_json::Value = serde_json::from_str(&ok(run(&mut cairn(&env, &["--json", "snapshots"])))).unwrap();
    let snap = &snaps[0];
    assert_eq!(snap["paths"][0], format!("/pg/{db}"));
    assert_eq!(snap["tags"], serde_json::json!(["nightly", "pg"]));

    let m = manifest(&env, "latest");
    assert_eq!(m["database"], db.as_str());
    assert_eq!(m["encoding"], "UTF8");
    assert!(m["snapshot_lsn"].as_str().unwrap().contains('/'));
    assert_eq!(table_rows(&m, "public", "big"), 1_000_000);
    // Leaf partitions are copied, the partitioned parent is not; an
    // inheritance parent holds only its own rows.
    assert_eq!(table_rows(&m, "app", "measurements_2023") + table_rows(&m, "app", "measurements_2024"), 1000);
    assert!(m["tables"].as_array().unwrap().iter().all(|t| t["name"] != "measurements"));
    assert_eq!(table_rows(&m, "app", "vehicles"), 2);
    assert_eq!(table_rows(&m, "app", "cars"), 2);
    assert_eq!(table_rows(&m, "app", "cache"), 2, "unlogged tables are included");
    let kinds = m["tables"].as_array().unwrap().iter().find(|t| t["name"] == "kinds").unwrap();
    assert!(!kinds["columns"].as_array().unwrap().iter().any(|c| c == "doubled"), "generated columns are not copied");

    let target = format!("{db}_restored");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--create", "--jobs", "2"])));
    let (a, b) = (pg.dump(&db), pg.dump(&target));
    assert!(a.contains("COPY public.big") && a.contains("lo_create('424243')") && a.contains("GRANT SELECT"));
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(0);
        panic!(
            "pg_dump of the restored database differs from the source at line {first}:\n{:?}\nvs\n{:?}",
            a.lines().nth(first),
            b.lines().nth(first)
        );
    }
    // The populated materialized view was refreshed, the other one was not.
    assert_eq!(pg.psql(&target, "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'never_filled'"), "f");
    assert_eq!(pg.psql(&target, "SELECT sum(n) FROM app.order_counts"), "500");
    assert_eq!(pg.psql(&target, "SELECT nextval('app.ticket')"), "110");
    // Every table, partitioned table and populated materialized view was
    // analyzed, and an inheritance parent has statistics over its children
    // (analyzed after they were loaded).
    let unanalyzed = pg.psql(
        &target,
        "SELECT string_agg(c.relname, ', ') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('public', 'app') AND (c.relkind IN ('r', 'p') OR (c.relkind = 'm' AND c.relispopulated)) \
           AND pg_stat_get_last_analyze_time(c.oid) IS NULL",
    );
    assert_eq!(unanalyzed, "", "never analyzed after the restore");
    assert_eq!(pg.psql(&target, "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 'vehicles' AND inherited"), "t");
    // Statistics of an index expression exist once the index does: the
    // final ANALYZE covers it.
    assert_eq!(pg.psql(&target, "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 'orders_lower_note'"), "t");

    // --clean over the restored copy after it changed brings it back.
    pg.psql(&target, "DELETE FROM app.orders WHERE id > 10; DROP TABLE public.big CASCADE");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--clean"])));
    assert_eq!(pg.dump(&target), a);

    // Drill: restores, counts, checks, drops.
    let out = ok(run(&mut cairn(
        &env,
        &[
            "--json",
            "pg",
            "drill",
            "-d",
            &pg.conn("postgres"),
            "--check",
            "SELECT count(*) = 1000000 FROM public.big",
            "--check",
            "SELECT id FROM app.orders WHERE note = 'order 7'",
        ],
    )));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["dropped"], true);
    assert_eq!(report["tables"].as_array().unwrap().len(), 10);
    assert!(report["restore_secs"].as_f64().unwrap() > 0.0);
    // While one connection loads the 1,000,000-row table, the other builds
    // the indexes of the small tables it has loaded.
    assert!(report["restore"]["post_data_early"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'"), "0");

    ok(run(&mut cairn(&env, &["check", "--read-data"])));
}

#[test]
fn all_databases_with_roles_restore_into_a_fresh_cluster() {
    // Clusters of its own: the backup takes every database of the server,
    // and the restore needs a server where the roles do not exist yet.
    let Some(src) = Pg::separate("cpgall") else { return };
    let Some(dst) = Pg::separate("cpgdest") else { return };
    let env = Env::new();
    env.init();
    src.psql(
        "postgres",
        "CREATE ROLE cairn_owner LOGIN PASSWORD 'owner-secret' CREATEDB; \
         ALTER ROLE cairn_owner SET work_mem = '8MB'",
    );
    src.psql("postgres", "CREATE DATABASE shop OWNER cairn_owner");
    src.psql("postgres", "CREATE DATABASE crm");
    fixture(&src, "shop");
    fixture(&src, "crm");
    src.psql("postgres", "GRANT cairn_app_reader TO cairn_owner");
    // The role owns objects in both databases (and the database shop).
    src.psql("shop", "ALTER SCHEMA app OWNER TO cairn_owner; ALTER TABLE app.orders OWNER TO cairn_owner");
    src.psql("crm", "CREATE TABLE public.owned AS SELECT 1 AS x; ALTER TABLE public.owned OWNER TO cairn_owner");
    src.psql("postgres", "CREATE TABLE maintenance_note AS SELECT 'kept' AS note");

    let backup = |env: &Env| {
        json_line(
            &ok(run(&mut cairn(env, &["--json", "pg", "backup", "--all-databases", "-d", &src.conn("postgres")]))),
            "summary",
        )
    };
    let day1 = backup(&env);
    let names: Vec<&str> =
        day1["databases"].as_array().unwrap().iter().map(|d| d["database"].as_str().unwrap()).collect();
    assert_eq!(names, ["crm", "postgres", "shop"], "every database but the templates: {day1}");
    let snaps: serde_json::Value = serde_json::from_str(&ok(run(&mut cairn(&env, &["--json", "snapshots"])))).unwrap();
    assert_eq!(snaps[0]["paths"][0], "/pg");
    let cluster: serde_json::Value =
        serde_json::from_str(&ok(run(&mut cairn(&env, &["dump", "latest", "/cluster.json"])))).unwrap();
    assert_eq!(cluster["kind"], "postgresql-cluster");
    let shop = cluster["databases"].as_array().unwrap().iter().find(|d| d["name"] == "shop").unwrap();
    assert_eq!(shop["owner"], "cairn_owner");
    let globals = ok(run(&mut cairn(&env, &["dump", "latest", "/globals.sql"])));
    assert!(globals.contains("CREATE ROLE cairn_owner"), "{globals}");
    let shop_manifest: serde_json::Value =
        serde_json::from_str(&ok(run(&mut cairn(&env, &["dump", "latest", "/databases/shop/manifest.json"])))).unwrap();
    assert_eq!(table_rows(&shop_manifest, "public", "big"), 1_000_000);

    // Nothing changed: only manifests and trees are new.
    let same = backup(&env);
    assert!(same["bytes_added"].as_u64().unwrap() < 300_000, "unchanged cluster added {same}");
    eprintln!("all databases: day 1 added {}, unchanged added {}", day1["bytes_added"], same["bytes_added"]);

    // Restore everything into the fresh cluster: roles come from the globals.
    assert_eq!(dst.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'cairn_owner'"), "0");
    let out = ok(run(&mut cairn(&env, &["pg", "restore", "-d", &dst.conn("postgres"), "--jobs", "2"])));
    assert!(out.contains("role \"postgres\" already exists"), "the existing role is reported: {out}");
    for db in ["shop", "crm", "postgres"] {
        assert_same_dump(&src.dump(db), &dst.dump(db), db);
    }
    assert_eq!(dst.psql("postgres", "SELECT note FROM maintenance_note"), "kept");
    assert_eq!(
        dst.psql("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"),
        "cairn_owner"
    );
    // Roles, memberships, settings and password hashes; the password role
    // of the test clusters exists on both with its own salt.
    let normalise = |g: String| {
        g.lines()
            .map(|l| if l.starts_with(&format!("ALTER ROLE {PASSWORD_ROLE} ")) { "PASSWORD ROLE" } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (a, b) = (normalise(src.globals()), normalise(dst.globals()));
    assert!(a.contains("ALTER ROLE cairn_owner WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN"), "{a}");
    assert!(a.contains("SCRAM-SHA-256$") && a.contains("GRANT cairn_app_reader TO cairn_owner"), "{a}");
    assert_same_dump(&a, &b, "pg_dumpall --globals-only");

    // One database: an existing one is refused without --clean, restored
    // with it; a dropped one is created again.
    let o = run(&mut cairn(
        &env,
        &["pg", "restore", "-d", &dst.conn("postgres"), "--only-database", "crm", "--no-globals"],
    ));
    let err = support::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("database \"crm\" already exists") && err.contains("--clean"), "{err}");
    dst.psql("crm", "DELETE FROM app.orders");
    ok(run(&mut cairn(
        &env,
        &["pg", "restore", "-d", &dst.conn("postgres"), "--only-database", "crm", "--no-globals", "--clean"],
    )));
    assert_same_dump(&src.dump("crm"), &dst.dump("crm"), "crm after --clean");
    dst.psql("postgres", "DROP DATABASE shop");
    ok(run(&mut cairn(
        &env,
        &["pg", "restore", "-d", &dst.conn("postgres"), "--only-database", "shop", "--no-globals"],
    )));
    assert_same_dump(&src.dump("shop"), &dst.dump("shop"), "shop recreated");
    let o = run(&mut cairn(&env, &["pg", "restore", "-d", &dst.conn("postgres"), "--only-database", "nope"]));
    let err = support::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no database \"nope\"") && err.contains("crm, postgres, shop"), "{err}");

    // Drill every database, then one.
    let out = ok(run(&mut cairn(&env, &["--json", "pg", "drill", "-d", &src.conn("postgres")])));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["databases"].as_array().unwrap().len(), 3);
    let out = ok(run(&mut cairn(&env, &["pg", "drill", "-d", &src.conn("postgres"), "--only-database", "crm"])));
    assert!(out.contains("(database crm)") && out.contains("drill passed"), "{out}");
    assert_eq!(src.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'"), "0");

    // A role that is not a superuser cannot read the password hashes: the
    // error names the way out.
    let owner = format!("host={} port={} user=cairn_owner dbname=postgres", src.dir.display(), src.port);
    fails(
        run(&mut cairn(&env, &["pg", "backup", "--all-databases", "-d", &owner])),
        1,
        &["pg_dumpall --globals-only failed", "pg_authid", "--no-role-passwords"],
    );
    src.stop();
    dst.stop();
}

/// Panics at the first differing line of two dumps.
#[track_caller]
fn assert_same_dump(a: &str, b: &str, what: &str) {
    if a != b {
        let first =
            a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(a.lines().count().min(b.lines().count()));
        panic!("{what}: dumps differ at line {first}:\n{:?}\nvs\n{:?}", a.lines().nth(first), b.lines().nth(first));
    }
}

#[test]
fn drill_fails_on_a_failing_check_and_still_drops_its_database() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("drill");
    pg.psql(&db, "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g");
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])));
    let o = run(&mut cairn(
        &env,
        &[
            "pg",
            "drill",
            "-d",
            &pg.conn("postgres"),
            "--check",
            "SELECT count(*) = 100 FROM t",
            "--check",
            "SELECT count(*) = 101 FROM t",
            "--check",
            "SELECT * FROM t WHERE g > 1000",
            "--check",
            "SELECT * FROM no_such_table",
        ],
    ));
    let out = support::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("check ok: SELECT count(*) = 100 FROM t"), "{out}");
    assert!(out.contains("check FAILED: SELECT count(*) = 101 FROM t"), "{out}");
    assert!(out.contains("check FAILED: SELECT * FROM t WHERE g > 1000 (no rows)"), "{out}");
    assert!(out.contains("no_such_table\" does not exist"), "{out}");
    assert!(out.contains("row counts: 1 of 1 tables match"), "{out}");
    assert!(out.contains("drill FAILED"), "{out}");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'"), "0");
}

/// Rows committed while a backup runs are not in it: the backup is held
/// (after exporting its snapshot) by a lock on another table while rows
/// are inserted and committed.
#[test]
fn writes_during_a_backup_are_not_in_it() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("consistent");
    pg.psql(
        &db,
        "CREATE TABLE blocker (x int); CREATE TABLE small (id serial, v text); \
         INSERT INTO small (v) SELECT 'before' FROM generate_series(1, 50); \
         CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
    );
    // Another session holds an exclusive lock on `blocker`.
    let mut holder = pg
        .tool("psql", &db)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder_in = holder.stdin.take().unwrap();
    writeln!(holder_in, "BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE;").unwrap();
    wait_for(
        pg,
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'blocker' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    );

    let backup = cairn(&env, &["--json", "pg", "backup", "-d", &pg.conn(&db), "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The backup has exported its snapshot and waits for the lock.
    wait_for(
        pg,
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cairn' AND datname = current_database() AND wait_event_type = 'Lock'",
    );
    pg.psql(
        &db,
        "INSERT INTO small (v) SELECT 'during' FROM generate_series(1, 25); INSERT INTO big VALUES (0, 'during')",
    );
    writeln!(holder_in, "ROLLBACK;").unwrap();
    drop(holder_in);
    let out = backup.wait_with_output().unwrap();
    let _ = holder.wait();
    ok(out);

    let m = manifest(&env, "latest");
    assert_eq!(table_rows(&m, "public", "small"), 50);
    assert_eq!(table_rows(&m, "public", "big"), 100000);
    let target = format!("{db}_r");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--create"])));
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM small WHERE v = 'during'"), "0");
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM big"), "100000");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM small"), "75");
}

fn wait_for(pg: &Pg, db: &str, count_sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.psql(db, count_sql) == "0" {
        assert!(Instant::now() < deadline, "timed out waiting for: {count_sql}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second backup after appending to and updating a small part of an
/// append-mostly table stores about the change, not the table again.
#[test]
fn second_backup_adds_about_the_change() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("incr");
    // ~30 MB of COPY text that does not compress to nothing.
    pg.psql(
        &db,
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, payload text); \
         INSERT INTO events SELECT g, timestamptz '2024-01-01' + g * interval '1 second', \
           md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 300000) g; \
         CREATE TABLE static AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    let day1 = json_line(&ok(run(&mut cairn(&env, &["--json", "pg", "backup", "-d", &pg.conn(&db)]))), "summary");
    let day1_added = day1["bytes_added"].as_u64().unwrap();
    let total = day1["total_bytes"].as_u64().unwrap();
    assert!(total > 30_000_000, "{day1}");

    // Unchanged: almost nothing new (the manifest and the trees).
    let same = json_line(&ok(run(&mut cairn(&env, &["--json", "pg", "backup", "-d", &pg.conn(&db)]))), "summary");
    assert!(same["bytes_added"].as_u64().unwrap() < 200_000, "unchanged database added {same}");

    // Day 2: 2% appended, 1% of the oldest rows updated.
    pg.psql(
        &db,
        "INSERT INTO events SELECT g, now(), md5(g::text) || 'new' FROM generate_series(300001, 306000) g; \
         UPDATE events SET payload = payload || '!' WHERE id <= 3000",
    );
    let day2 = json_line(&ok(run(&mut cairn(&env, &["--json", "pg", "backup", "-d", &pg.conn(&db)]))), "summary");
    let day2_added = day2["bytes_added"].as_u64().unwrap();
    eprintln!(
        "COPY data {total} bytes; added: day 1 {day1_added}, unchanged {}, day 2 {day2_added}",
        same["bytes_added"]
    );
    assert!(
        day2_added * 4 < day1_added,
        "day 2 added {day2_added} bytes, day 1 {day1_added}: the changed table was stored again"
    );
    let m = manifest(&env, "latest");
    assert_eq!(table_rows(&m, "public", "events"), 306000);
}

#[test]
fn table_selection() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("sel");
    pg.psql(
        &db,
        "CREATE TABLE keep1 AS SELECT 1 AS x; CREATE TABLE keep2 AS SELECT 2 AS x; \
         CREATE TABLE logs AS SELECT 3 AS x; CREATE TABLE skipme AS SELECT 4 AS x",
    );
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "-T", "skip*", "--exclude-table-data", "logs"])));
    let m = manifest(&env, "latest");
    let names: Vec<&str> = m["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["keep1", "keep2", "logs"]);
    let target = format!("{db}_r");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--create"])));
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM logs"), "0");
    assert_eq!(pg.psql(&target, "SELECT x FROM keep2"), "2");
    assert!(pg.try_psql(&target, "SELECT 1 FROM skipme").is_err());

    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "--table", "public.keep?"])));
    let m = manifest(&env, "latest");
    let names: Vec<&str> = m["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["keep1", "keep2"]);
    let o = run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "--table", "nothing_like_this"]));
    fails(o, 1, &["no table matches --table nothing_like_this"]);
}

/// libpq's other sources of connection settings: a service from
/// `pg_service.conf` and the password from `~/.pgpass`, for cairn's own
/// connections and for the pg_dump it runs.
#[test]
fn services_and_the_password_file_are_read_as_libpq_reads_them() {
    use std::os::unix::fs::PermissionsExt;
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("svc");
    pg.psql(&db, "CREATE TABLE t AS SELECT 42 AS answer");
    let services = env.root().join("pg_service.conf");
    std::fs::write(
        &services,
        format!("[cairn_app]\nhost=127.0.0.1\nport={}\nuser={PASSWORD_ROLE}\ndbname={db}\nsslmode=disable\n", pg.port),
    )
    .unwrap();
    let pgpass = env.root().join("pgpass");
    std::fs::write(&pgpass, format!("# cairn test\n127.0.0.1:{}:{db}:{PASSWORD_ROLE}:{PASSWORD}\n", pg.port)).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_files = |args: &[&str]| {
        let mut c = cairn(&env, args);
        c.env("PGSERVICEFILE", &services).env("PGPASSFILE", &pgpass).env("PGSYSCONFDIR", env.root());
        c.env_remove("PGPASSWORD").env_remove("PGHOST").env_remove("PGPORT").env_remove("PGUSER");
        c
    };
    // `service=NAME` in the string, and PGSERVICE.
    ok(run(&mut with_files(&["pg", "backup", "-d", "service=cairn_app"])));
    ok(run(with_files(&["pg", "backup"]).env("PGSERVICE", "cairn_app")));
    let listed = ok(run(&mut with_files(&["snapshots"])));
    assert_eq!(listed.matches(&format!("/pg/{db}")).count(), 2, "{listed}");

    // Without the password file the scram login fails: the password came from it.
    let mut no_pass = with_files(&["pg", "backup", "-d", "service=cairn_app"]);
    no_pass.env("PGPASSFILE", env.root().join("missing"));
    fails(run(&mut no_pass), 1, &["password"]);
    // A password file others can read is ignored, as libpq ignores it.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&mut with_files(&["pg", "backup", "-d", "service=cairn_app"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("group or world access"), "{}", stderr(&out));
    // An unknown service names the files searched.
    fails(run(&mut with_files(&["pg", "backup", "-d", "service=nope"])), 2, &["[nope]", "pg_service.conf"]);
}

#[test]
fn bad_connections_fail_clearly_and_write_nothing() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("bad");
    pg.psql(&db, "CREATE TABLE t AS SELECT 1 AS x");

    // The right password works over TCP with scram; a wrong one is refused.
    let good = pg.url(&format!("{PASSWORD_ROLE}:{PASSWORD}"), &db);
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &good])));
    let wrong = pg.url(&format!("{PASSWORD_ROLE}:wrong"), &db);
    let line = fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &wrong])),
        1,
        &["password authentication failed", "check the password"],
    );
    assert!(!line.contains("wrong"), "the password leaked into: {line}");
    // PGPASSWORD is used when the string has none.
    ok(run(cairn(&env, &["pg", "backup", "-d", &pg.url(PASSWORD_ROLE, &db)]).env("PGPASSWORD", PASSWORD)));

    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!("postgresql://postgres@127.0.0.1:{port}/{db}?sslmode=disable");
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &url])),
        1,
        // The library's cause; the flag that sets the connection, added by the CLI.
        &["cannot connect to PostgreSQL", "is the server running", "-d/--dbname"],
    );
    // A database that does not exist.
    fails(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn("no_such_db")])), 1, &["no_such_db", "does not exist"]);
    // sslmode=require against a server without TLS.
    let url = format!("postgresql://postgres@127.0.0.1:{}/{db}?sslmode=require", pg.port);
    fails(run(&mut cairn(&env, &["pg", "backup", "-d", &url])), 1, &["cannot connect to PostgreSQL"]);
    assert_eq!(env.snapshot_count(), 2);
}

#[test]
fn missing_or_old_pg_dump_is_named() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("tools");
    pg.psql(&db, "CREATE TABLE t AS SELECT 1 AS x");
    let empty = env.root().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let bindir = empty.display().to_string();
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "--pg-bindir", &bindir])),
        1,
        &["pg_dump not found", "--pg-bindir", "postgresql-client"],
    );
    // A pg_dump of an older major version than the server's.
    let old = env.root().join("old-bin");
    std::fs::create_dir(&old).unwrap();
    let script = old.join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bindir = old.display().to_string();
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "--pg-bindir", &bindir])),
        1,
        &["version 9, older than the server", "postgresql-client"],
    );
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn unreadable_table_is_named() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("perm");
    pg.psql(
        &db,
        "CREATE TABLE open_t AS SELECT 1 AS x; CREATE TABLE secret AS SELECT 2 AS x; \
         REVOKE ALL ON secret FROM PUBLIC; \
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cairn_limited') THEN \
           CREATE ROLE cairn_limited LOGIN; END IF; END $$; \
         GRANT SELECT ON open_t TO cairn_limited",
    );
    let conn = format!("host={} port={} user=cairn_limited dbname={db}", pg.dir.display(), pg.port);
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &conn])),
        1,
        &["secret", "permission denied", "--exclude-table"],
    );
    assert_eq!(env.snapshot_count(), 0);
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &conn, "--exclude-table", "secret"])));
    let m = manifest(&env, "latest");
    assert_eq!(m["tables"].as_array().unwrap().len(), 1);
}

/// The server goes away in the middle of a backup: a clear error, no
/// snapshot, and a repository that passes `check`.
#[test]
fn server_killed_mid_backup() {
    if Pg::shared().is_none() {
        return;
    }
    let pg = Pg::start("cpk").expect("a second cluster");
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("killed");
    pg.psql(
        &db,
        "CREATE TABLE blocker (x int); CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    let mut holder = pg
        .tool("psql", &db)
        .args(["-X", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder_in = holder.stdin.take().unwrap();
    writeln!(holder_in, "BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE;").unwrap();
    wait_for(
        &pg,
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'blocker' AND l.granted",
    );
    let backup = cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &pg,
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cairn' AND datname = current_database() AND wait_event_type = 'Lock'",
    );
    pg.stop();
    let out = backup.wait_with_output().unwrap();
    drop(holder_in);
    let _ = holder.wait();
    let line = fails(out, 1, &["the backup failed; no snapshot was written"]);
    eprintln!("error after the server stopped: {line}");
    assert!(line.contains("terminat") || line.contains("closed") || line.contains("connection"), "{line}");
    assert_eq!(env.snapshot_count(), 0);
    ok(run(&mut cairn(&env, &["check"])));
}

#[test]
fn restore_refuses_a_file_snapshot() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let dir = env.root().join("files");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), "x").unwrap();
    let out = ok(run(&mut cairn(&env, &["--json", "backup", dir.to_str().unwrap()])));
    let id = json_line(&out, "summary")["snapshot_id"].as_str().unwrap().to_owned();
    let db = pg.fresh_db("notpg");
    fails(run(&mut cairn(&env, &["pg", "restore", &id, "-d", &pg.conn(&db)])), 1, &["is not a PostgreSQL backup"]);
    fails(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&db)])), 1, &["no snapshot matches"]);
}

/// Rewrites the latest snapshot with one table's row count in its manifest
/// changed by `delta`, through the library (as a damaged or forged backup
/// would look), and returns the new snapshot's id.
fn tamper_row_count(env: &Env, delta: i64) -> String {
    use cairn_repo::testing::Writer;
    use cairn_repo::{Backend, BackendOptions, OpenOptions, Repository};
    use cairn_repo::{Extent, Tree};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = Backend::open(&env.repo(), &BackendOptions::default()).unwrap();
        let repo = Repository::open(backend, b"correct horse", OpenOptions::default()).await.unwrap();
        let (_, snapshot) = repo.list_snapshots().await.unwrap().pop().unwrap();
        let index = std::sync::Arc::new(repo.load_index().await.unwrap());
        let tree = |id: cairn_repo::TreeId| {
            let (repo, index) = (&repo, &index);
            async move { Tree::decode(&repo.read_blob(index, &id).await.unwrap()).unwrap() }
        };
        let root = tree(snapshot.tree).await;
        let db = root.nodes()[0].clone();
        let dir = tree(db.subtree.unwrap()).await;
        let mut manifest_node = dir.get(b"manifest.json").unwrap().clone();
        let mut bytes = Vec::new();
        for extent in &manifest_node.content {
            let Extent::Blob { id, offset, length } = extent else { panic!("a hole in the manifest") };
            let blob = repo.read_blob(&index, id).await.unwrap();
            bytes.extend_from_slice(&blob[*offset as usize..(*offset + *length) as usize]);
        }
        let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let rows = &mut manifest["tables"][0]["rows"];
        *rows = serde_json::json!(rows.as_i64().unwrap() + delta);
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        let writer = Writer::new(&repo, index.clone()).unwrap();
        let id = writer.add_data(&bytes).await.unwrap();
        manifest_node.content = vec![Extent::Blob { id, offset: 0, length: bytes.len() as u32 }];
        manifest_node.size = bytes.len() as u64;
        let nodes =
            dir.nodes().iter().map(|n| if n.name == manifest_node.name { manifest_node.clone() } else { n.clone() });
        let dir_id = writer.add_tree(&Tree::new(nodes.collect()).unwrap()).await.unwrap();
        let mut db = db;
        db.subtree = Some(dir_id);
        let root_id = writer.add_tree(&Tree::new(vec![db]).unwrap()).await.unwrap();
        let mut forged = snapshot.clone();
        forged.tree = root_id;
        forged.time = jiff::Timestamp::now();
        writer.commit(&forged).await.unwrap().to_hex()
    })
}

/// A drill compares every table's restored row count with the manifest: a
/// snapshot whose manifest claims one row more fails the drill (exit 1),
/// and the untampered snapshot passes.
#[test]
fn drill_fails_when_a_row_count_is_tampered() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("tamper");
    pg.psql(&db, "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g");
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])));
    let good = ok(run(&mut cairn(&env, &["pg", "drill", "latest", "-d", &pg.conn("postgres")])));
    assert!(good.contains("row counts: 1 of 1 tables match"), "{good}");
    let forged = tamper_row_count(&env, 1);
    let o = run(&mut cairn(&env, &["pg", "drill", &forged, "-d", &pg.conn("postgres")]));
    let out = support::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", support::stderr(&o));
    // The restore itself counts each table's rows against the manifest.
    assert!(out.contains("received 100 rows, the backup recorded 101") && out.contains("drill FAILED"), "{out}");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'"), "0");
}

/// Runs openssl with `args` in `dir`; panics with its messages on failure.
#[track_caller]
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for `localhost` and a client certificate for
/// `client_cn`, all P-256, made with the openssl CLI in `dir`.
fn make_certificates(dir: &std::path::Path, client_cn: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cairn test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        ("server", "localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", client_cn, "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, crt, subj) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("/CN={cn}"));
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// TLS with client certificates: a server with `ssl = on` that lets one
/// role in only with a certificate its CA signed (`hostssl ... cert`).
#[test]
fn tls_with_client_certificates() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(pg) = Pg::separate("cpgtls") else { return };
    let env = Env::new();
    env.init();
    let certs = tempfile::Builder::new().prefix("cairn-tls-").tempdir().unwrap();
    let dir = certs.path();
    make_certificates(dir, "cairn_cert_user");
    std::fs::set_permissions(dir.join("client.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // The server's files in its data directory, owned by the server's user.
    let data = pg.dir.join("data");
    let owner = std::fs::metadata(&data).unwrap();
    for f in ["server.crt", "server.key", "ca.crt"] {
        let to = data.join(f);
        std::fs::copy(dir.join(f), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all cairn_cert_user all cert\nhostnossl all cairn_cert_user all reject\n{old}"),
    )
    .unwrap();
    for sql in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "ALTER SYSTEM SET ssl_ca_file = 'ca.crt'",
        "CREATE ROLE cairn_cert_user LOGIN SUPERUSER",
        "SELECT pg_reload_conf()",
    ] {
        pg.psql("postgres", sql);
    }
    let db = pg.fresh_db("tls");
    pg.psql(&db, "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let file = |f: &str| dir.join(f).display().to_string();
    let base = |host: &str, mode: &str| {
        format!(
            "host={host} port={} user=cairn_cert_user dbname={db} sslmode={mode} sslrootcert={}",
            pg.port,
            file("ca.crt")
        )
    };
    let with_cert = |host: &str, mode: &str| {
        format!("{} sslcert={} sslkey={}", base(host, mode), file("client.crt"), file("client.key"))
    };

    // The certificate in the string: cairn's connections and pg_dump's.
    let out = ok(run(&mut cairn(&env, &["--json", "pg", "backup", "-d", &with_cert("localhost", "verify-full")])));
    assert_eq!(json_line(&out, "summary")["rows"], 1000, "{out}");
    // The same from PGSSLCERT / PGSSLKEY / PGSSLROOTCERT, and a restore over TLS.
    let mut by_env =
        cairn(&env, &["pg", "restore", "-d", &format!("{} dbname={db}_back", base("localhost", "verify-ca"))]);
    by_env.arg("--create").env("PGSSLCERT", file("client.crt")).env("PGSSLKEY", file("client.key"));
    ok(run(&mut by_env));
    assert_eq!(pg.psql(&format!("{db}_back"), "SELECT sum(g) FROM t"), "500500");
    // The sessions were encrypted and authenticated by the certificate.
    let mut by_env = cairn(&env, &["pg", "backup", "-d", &base("localhost", "require")]);
    by_env.env("PGSSLCERT", file("client.crt")).env("PGSSLKEY", file("client.key"));
    ok(run(&mut by_env));

    // Without a certificate: refused, with the way to give one.
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &base("localhost", "verify-full")])),
        1,
        &["cannot connect to PostgreSQL", "certificate", "sslcert="],
    );
    // verify-full checks the host name (the certificate names localhost),
    // verify-ca only the chain.
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &with_cert("127.0.0.1", "verify-full")])),
        1,
        &["cannot connect to PostgreSQL", "host name"],
    );
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &with_cert("127.0.0.1", "verify-ca")])));
    // A server certificate from another CA fails verify-ca.
    let other = tempfile::Builder::new().prefix("cairn-tls-other-").tempdir().unwrap();
    make_certificates(other.path(), "someone");
    let wrong_root = with_cert("localhost", "verify-ca")
        .replace(&file("ca.crt"), &other.path().join("ca.crt").display().to_string());
    fails(
        run(&mut cairn(&env, &["pg", "backup", "-d", &wrong_root])),
        1,
        &["cannot connect to PostgreSQL", "certificate"],
    );
    // A key others can read is refused before connecting, as libpq refuses it.
    std::fs::set_permissions(dir.join("client.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    fails(run(&mut cairn(&env, &["pg", "backup", "-d", &with_cert("localhost", "verify-full")])), 1, &["chmod 600"]);
    assert_eq!(env.snapshot_count(), 3);
    pg.stop();
}

/// What a database has besides its contents, as one comparable text:
/// owner, connection limit, privileges, comment, settings (its own and its
/// roles').
fn database_properties(pg: &Pg, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(d.datdba) || ' ' || d.datconnlimit || ' ' || coalesce(d.datacl::text, 'default') \
                    || ' ' || coalesce(shobj_description(d.oid, 'pg_database'), '-') || ' ' \
                    || coalesce((SELECT string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0))::text, '*') \
                                                   || ':' || s.setconfig::text, ' ' ORDER BY 1) \
                                 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), '') \
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    )
}

/// `--all-databases` keeps each database's settings, privileges, comment,
/// connection limit and owner, and `--exclude-database` leaves databases out.
#[test]
fn all_databases_keep_database_properties_and_exclude_patterns() {
    let Some(src) = Pg::separate("cpgprops1") else { return };
    let Some(dst) = Pg::separate("cpgpropsdst") else { return };
    let env = Env::new();
    env.init();
    for sql in [
        "CREATE ROLE cairn_dbowner",
        "CREATE ROLE cairn_reader",
        "CREATE DATABASE keep1 OWNER cairn_dbowner CONNECTION LIMIT 7",
        "CREATE DATABASE keep2",
        "CREATE DATABASE skip_a",
        "CREATE DATABASE \"Skip.B\"",
        "ALTER DATABASE keep1 SET work_mem = '3MB'",
        "ALTER DATABASE keep1 SET search_path = \"$user\", public, \"Odd Schema\"",
        "ALTER ROLE cairn_reader IN DATABASE keep1 SET statement_timeout = '5s'",
        "COMMENT ON DATABASE keep1 IS 'the shop''s data'",
        "REVOKE CONNECT, TEMPORARY ON DATABASE keep1 FROM PUBLIC",
        "GRANT CONNECT ON DATABASE keep1 TO cairn_reader WITH GRANT OPTION",
        "COMMENT ON DATABASE postgres IS 'maintenance'",
    ] {
        src.psql("postgres", sql);
    }
    src.psql("keep1", "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g");
    src.psql("keep2", "CREATE TABLE t AS SELECT g FROM generate_series(1, 20) g");
    // Set last: it would make the restore's own sessions read-only if it
    // were replayed before the data.
    src.psql("postgres", "ALTER DATABASE keep2 SET default_transaction_read_only = on");

    let out = ok(run(&mut cairn(
        &env,
        &[
            "--json",
            "pg",
            "backup",
            "--all-databases",
            "-d",
            &src.conn("postgres"),
            "--exclude-database",
            "skip_*",
            "--exclude-database",
            "\"Skip.B\"",
        ],
    )));
    let names: Vec<String> = json_line(&out, "summary")["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["keep1", "keep2", "postgres"], "{out}");
    let cluster: serde_json::Value =
        serde_json::from_str(&ok(run(&mut cairn(&env, &["dump", "latest", "/cluster.json"])))).unwrap();
    let keep1 = cluster["databases"].as_array().unwrap().iter().find(|d| d["name"] == "keep1").unwrap().clone();
    assert_eq!(keep1["connection_limit"], 7, "{keep1}");
    assert_eq!(keep1["comment"], "the shop's data", "{keep1}");

    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &dst.conn("postgres")])));
    for db in ["keep1", "keep2", "postgres"] {
        let (a, b) = (database_properties(&src, db), database_properties(&dst, db));
        assert!(!a.is_empty());
        assert_eq!(a, b, "properties of {db}");
    }
    assert!(database_properties(&dst, "keep1").contains("cairn_reader=c*/cairn_dbowner"));
    assert_eq!(dst.psql("keep2", "SELECT count(*) FROM t"), "20");
    assert_eq!(dst.psql("keep2", "SHOW default_transaction_read_only"), "on");
    assert_eq!(dst.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname ILIKE 'skip%'"), "0");

    // A database pattern with a schema part is a usage error.
    fails(
        run(&mut cairn(
            &env,
            &["pg", "backup", "--all-databases", "-d", &src.conn("postgres"), "--exclude-database", "a.b"],
        )),
        2,
        &["invalid database pattern", "no schema part"],
    );
    src.stop();
    dst.stop();
}

/// A drill on a server that lacks the roles the snapshot's objects belong
/// to or are granted to: they are created NOLOGIN for the drill and dropped
/// after it, or, with --no-create-roles, listed.
#[test]
fn drill_creates_the_roles_it_needs_or_lists_them() {
    let Some(pg) = Pg::shared() else { return };
    let Some(drill_server) = Pg::separate("cpgdrillroles") else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("drillroles");
    let (owner, reader) = (format!("{db}_owner"), format!("{db}_reader"));
    pg.psql("postgres", &format!("CREATE ROLE {owner} LOGIN PASSWORD 'secret'; CREATE ROLE {reader}"));
    pg.psql(
        &db,
        &format!(
            "CREATE SCHEMA app AUTHORIZATION {owner}; \
             CREATE TABLE app.t AS SELECT g FROM generate_series(1, 50) g; ALTER TABLE app.t OWNER TO {owner}; \
             GRANT SELECT ON app.t TO {reader}; CREATE TABLE public.mine (x int)"
        ),
    );
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])));
    let m = manifest(&env, "latest");
    let roles: Vec<&str> = m["roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(roles, [owner.as_str(), reader.as_str(), "postgres"], "{m}");

    // Listed, and nothing changed on the drill server.
    let line = fails(
        run(&mut cairn(&env, &["pg", "drill", "-d", &drill_server.conn("postgres"), "--no-create-roles"])),
        1,
        &["roles the drill server lacks", &format!("{owner}, {reader}"), "CREATE ROLE", "--no-create-roles"],
    );
    assert!(!line.contains("postgres,"), "the existing role is not listed: {line}");
    let count_roles = |srv: &Pg| {
        srv.psql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname IN ('{owner}', '{reader}')"))
    };
    assert_eq!(count_roles(&drill_server), "0");
    assert_eq!(
        drill_server.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'"),
        "0"
    );

    // Created for the drill, which passes with the owners and grants in place, then dropped.
    let check = format!("SELECT pg_get_userbyid(relowner) = '{owner}' FROM pg_class WHERE relname = 't'");
    let grant = format!("SELECT has_table_privilege('{reader}', 'app.t', 'SELECT')");
    let out = ok(run(&mut cairn(
        &env,
        &["pg", "drill", "-d", &drill_server.conn("postgres"), "--check", &check, "--check", &grant],
    )));
    assert!(out.contains(&format!("roles created for the drill (NOLOGIN): {owner}, {reader}")), "{out}");
    assert!(out.contains("drill passed"), "{out}");
    assert_eq!(count_roles(&drill_server), "0", "the drill's roles were dropped");
    // On the source server, which has them, nothing is created.
    let out = ok(run(&mut cairn(&env, &["--json", "pg", "drill", "-d", &pg.conn("postgres")])));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["roles_created"], serde_json::json!([]), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    drill_server.stop();
}

/// Installs `cairn_test_config`, a tiny extension with configuration
/// tables (no contrib extension registers any), into the server's
/// extension directory: a table whose script adds a built-in row and whose
/// filter keeps only the user's rows, a table and sequence kept whole.
fn install_config_extension() {
    let out = Command::new("pg_config").arg("--sharedir").output().expect("run pg_config");
    let sharedir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = std::path::Path::new(&sharedir).join("extension");
    let files = [
        (
            "cairn_test_config.control",
            "comment = 'cairn tests: an extension with configuration tables'\n\
             default_version = '1.0'\nrelocatable = false\nsuperuser = true\n",
        ),
        (
            "cairn_test_config--1.0.sql",
            "CREATE TABLE @extschema@.settings (key text PRIMARY KEY, value text, \
                 user_added boolean NOT NULL DEFAULT true);\n\
             INSERT INTO @extschema@.settings VALUES ('built-in', 'from the script', false);\n\
             SELECT pg_catalog.pg_extension_config_dump('@extschema@.settings', 'WHERE user_added');\n\
             CREATE TABLE @extschema@.journal (id serial PRIMARY KEY, note text);\n\
             SELECT pg_catalog.pg_extension_config_dump('@extschema@.journal', '');\n\
             SELECT pg_catalog.pg_extension_config_dump('@extschema@.journal_id_seq', '');\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| {
            panic!(
                "cannot install the test extension into {} ({e}): this test needs write access to \
                 PostgreSQL's extension directory (run it as root or as the owner of {sharedir})",
                dir.display()
            )
        });
    }
}

/// An extension's configuration tables keep the user's rows (those its
/// filter selects) and sequence values, loaded after CREATE EXTENSION
/// without losing or doubling the rows its script adds.
#[test]
fn extension_configuration_tables_keep_their_data() {
    let Some(pg) = Pg::shared() else { return };
    install_config_extension();
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("extcfg");
    pg.psql(
        &db,
        "CREATE SCHEMA cfg; CREATE EXTENSION cairn_test_config SCHEMA cfg; \
         INSERT INTO cfg.settings (key, value) VALUES ('colour', 'green'), ('size', 'large'); \
         INSERT INTO cfg.journal (note) SELECT 'entry ' || g FROM generate_series(1, 30) g; \
         DELETE FROM cfg.journal WHERE id > 25",
    );
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])));
    let m = manifest(&env, "latest");
    assert_eq!(table_rows(&m, "cfg", "settings"), 2, "only the rows the filter selects: {m}");
    assert_eq!(table_rows(&m, "cfg", "journal"), 25);
    let settings = m["tables"].as_array().unwrap().iter().find(|t| t["name"] == "settings").unwrap();
    assert_eq!(settings["extension"]["name"], "cairn_test_config");
    assert_eq!(settings["extension"]["condition"], "WHERE user_added");

    let target = format!("{db}_restored");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--create"])));
    assert_eq!(
        pg.psql(&target, "SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM cfg.settings"),
        "built-in=from the script,colour=green,size=large"
    );
    assert_eq!(pg.psql(&target, "SELECT count(*), max(id) FROM cfg.journal"), "25|25");
    assert_eq!(
        pg.psql(&target, "SELECT last_value, is_called FROM cfg.journal_id_seq"),
        "30|t",
        "the sequence is kept"
    );
    // pg_dump dumps configuration tables' rows too: both dumps agree.
    assert_same_dump(&pg.dump(&db), &pg.dump(&target), "extension configuration");
    // Over itself with --clean (the extension is dropped and created again), and in a drill.
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--clean"])));
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM cfg.settings"), "3");
    let out = ok(run(&mut cairn(&env, &["pg", "drill", "-d", &pg.conn("postgres")])));
    assert!(out.contains("drill passed"), "{out}");
}

/// `--row-order key`: tables with a primary key, or a unique index over
/// NOT NULL columns, are copied in key order (after updates moved rows in
/// the heap); tables without one in heap order; the restore is the same.
#[test]
fn row_order_key_sorts_tables_that_have_a_key() {
    let Some(pg) = Pg::shared() else { return };
    let env = Env::new();
    env.init();
    let db = pg.fresh_db("roworder");
    pg.psql(
        &db,
        "CREATE TABLE pk (id int PRIMARY KEY, v text); \
         INSERT INTO pk SELECT g, 'v' || g FROM generate_series(1, 200) g; \
         CREATE TABLE uniq (a int NOT NULL, b text NOT NULL, c int UNIQUE, UNIQUE (b, a)); \
         INSERT INTO uniq SELECT 201 - g, 'x', g FROM generate_series(1, 200) g; \
         CREATE TABLE nokey (id int, v text); \
         INSERT INTO nokey SELECT g, 'v' FROM generate_series(1, 200) g; \
         UPDATE pk SET v = 'moved' WHERE id % 7 = 0; UPDATE nokey SET v = 'moved' WHERE id % 7 = 0",
    );
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db), "--row-order", "key"])));
    let m = manifest(&env, "latest");
    let order =
        |name: &str| m["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["order_by"].clone();
    assert_eq!(order("pk"), serde_json::json!(["id"]));
    // The nullable unique column does not qualify; the NOT NULL pair does.
    assert_eq!(order("uniq"), serde_json::json!(["b", "a"]));
    assert_eq!(order("nokey"), serde_json::Value::Null);
    let first_column = |table: &str| -> Vec<i64> {
        ok(run(&mut cairn(&env, &["dump", "latest", &format!("/data/public/{table}")])))
            .lines()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(first_column("pk"), (1..=200).collect::<Vec<_>>(), "sorted by the primary key");
    assert_eq!(first_column("uniq"), (1..=200).collect::<Vec<_>>(), "sorted by (b, a)");
    let heap = first_column("nokey");
    assert_ne!(heap, (1..=200).collect::<Vec<_>>(), "the updated rows moved to the end of the heap");
    assert_eq!(heap.last(), Some(&196));

    let target = format!("{db}_restored");
    ok(run(&mut cairn(&env, &["pg", "restore", "-d", &pg.conn(&target), "--create"])));
    for t in ["pk", "uniq", "nokey"] {
        let sql = format!("SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {t} x");
        assert_eq!(pg.psql(&db, &sql), pg.psql(&target, &sql), "{t}");
    }
    // Heap order is the default.
    ok(run(&mut cairn(&env, &["pg", "backup", "-d", &pg.conn(&db)])));
    let m = manifest(&env, "latest");
    assert!(m["tables"].as_array().unwrap().iter().all(|t| t.get("order_by").is_none()), "{m}");
}
