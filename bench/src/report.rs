//! The one table the benchmark prints: each figure, its reference from the
//! same run, the ratio, the target and whether it is met.

use std::time::Duration;

use crate::load::Outcome;

/// One line of the table.
pub struct Row {
    name: String,
    rate: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    value: Option<String>,
    reference: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rate: None,
            p50: None,
            p99: None,
            value: None,
            reference: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    fn load(mut self, outcome: &mut Outcome, status: u16) -> Self {
        self.rate = Some(outcome.rate_of(status));
        self.p50 = Some(outcome.percentile_ms(0.50));
        self.p99 = Some(outcome.percentile_ms(0.99));
        self.value = outcome
            .cpu
            .and_then(|cpu| cpu.per_request(outcome.answered()));
        self
    }
}

/// The whole run.
pub struct Report {
    cores: usize,
    duration: Duration,
    /// The label of the PostgreSQL rows ("PostgreSQL" or "PostgreSQL +
    /// Redis"), when the run has them.
    postgres: Option<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

impl Report {
    pub fn new(cores: usize, duration: Duration, postgres: Option<String>) -> Self {
        Self {
            cores,
            duration,
            postgres,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The raw rows: Sesame's kernel (the reference of the login rows),
    /// and the other implementations against it.
    pub fn argon(&mut self, single: f64, raw: f64, rustcrypto: f64, raw_alloc: f64, raw_c: f64) {
        let kernel = sesame::core::passwords::Kernel::instruction_set();
        let mut row = Row::new(format!(
            "raw argon2id, {} threads, Sesame's kernel ({kernel}, reused memory)",
            self.cores
        ));
        row.rate = Some(raw);
        row.value = Some(format!(
            "1 thread: {single:.1}/s, {:.1} ms a hash",
            1000.0 / single
        ));
        self.rows.push(row);
        for (name, rate) in [
            ("raw argon2id, RustCrypto argon2, reused memory", rustcrypto),
            (
                "raw argon2id, RustCrypto argon2, allocating per hash",
                raw_alloc,
            ),
        ] {
            let mut row = Row::new(name);
            row.rate = Some(rate);
            row.reference = "Sesame's kernel".into();
            row.ratio = Some(rate / raw);
            self.rows.push(row);
        }
        // argon2-sys can only build the C reference for this very CPU
        // (`-march=native`); Sesame's kernel is portable (one binary).
        let mut row = Row::new("raw argon2id, C reference, -march=native (argon2-sys)");
        row.rate = Some(raw_c);
        row.reference = "Sesame's kernel".into();
        row.ratio = Some(raw_c / raw);
        row.value = Some("not portable; see bench/README".into());
        self.rows.push(row);
    }

    pub fn bare(&mut self, c16: &mut Outcome, c64: &mut Outcome) {
        self.rows
            .push(Row::new("bare axum GET, c=16").load(c16, 200));
        self.rows
            .push(Row::new("bare axum GET, c=64").load(c64, 200));
    }

    /// `sesame import` of bcrypt accounts on SQLite: (accounts, time, peak RSS).
    pub fn import(&mut self, runs: &[(u64, Duration, f64)]) {
        for &(accounts, elapsed, _) in runs {
            let rate = accounts as f64 / elapsed.as_secs_f64();
            let mut row = Row::new(format!("import {accounts} bcrypt accounts (SQLite)"));
            row.rate = Some(rate);
            row.value = Some(format!("{:.1} s", elapsed.as_secs_f64()));
            if accounts >= 100_000 {
                row.target = "≥ 20,000 accounts/s".into();
                row.met = Some(rate >= 20_000.0);
            }
            self.rows.push(row);
        }
        if let [(small, _, small_peak), .., (large, _, large_peak)] = runs {
            let mut row = Row::new(format!("import peak RSS, {small} → {large} accounts"));
            row.value = Some(format!("{small_peak:.1} → {large_peak:.1} MiB"));
            row.ratio = Some(large_peak / small_peak);
            row.target = "flat (≤ 1.25×)".into();
            row.met = Some(*large_peak <= small_peak * 1.25);
            self.rows.push(row);
        }
    }

    pub fn start(&mut self, first: Duration, restart: Duration, idle_rss: f64) {
        let mut row = Row::new("start to first /healthz (restart)");
        row.value = Some(format!(
            "{:.0} ms (first start {:.0} ms)",
            ms(restart),
            ms(first)
        ));
        row.target = "≤ 300 ms".into();
        row.met = Some(ms(restart) <= 300.0);
        self.rows.push(row);
        let mut row = Row::new("RSS idle");
        row.value = Some(format!("{idle_rss:.1} MiB"));
        row.target = "≤ 30 MiB".into();
        row.met = Some(idle_rss <= 30.0);
        self.rows.push(row);
    }

    /// The login rows; with PostgreSQL outcomes (c=4, c=32, measured in the
    /// same rounds), each PostgreSQL row follows its SQLite row.
    pub fn login(
        &mut self,
        c4: &mut Outcome,
        c32: &mut Outcome,
        postgres: Option<(&mut Outcome, &mut Outcome)>,
        raw: f64,
        single: f64,
    ) {
        let hash_ms = 1000.0 / single;
        let p99_limit = 2.0 * (32.0 / self.cores as f64) * hash_ms;
        let (pg4, pg32) = postgres.unzip();
        for (name, outcome, concurrency, pg) in
            [("login, c=4", c4, 4, pg4), ("login, c=32", c32, 32, pg32)]
        {
            let mut row = Row::new(name).load(outcome, 200);
            let rate = row.rate.unwrap_or(0.0);
            row.reference = "raw argon2id, Sesame's kernel".into();
            row.ratio = Some(rate / raw);
            let rate_ok = rate / raw >= 0.90;
            if concurrency == 32 {
                row.target = format!("≥ 0.90, p99 ≤ {p99_limit:.0} ms");
                row.met = Some(rate_ok && row.p99.unwrap_or(f64::MAX) <= p99_limit);
            } else {
                row.target = "≥ 0.90".into();
                row.met = Some(rate_ok);
            }
            self.check(name, outcome);
            self.rows.push(row);
            if let Some(pg) = pg {
                // Hashing dominates a login: the database must not.
                self.postgres_row(name, pg, "raw argon2id, Sesame's kernel", raw, 0.90);
            }
        }
    }

    /// Forward auth: the hottest path, against the bare handler.
    pub fn authz(&mut self, c64: &mut Outcome, bare64: &Outcome) {
        let mut row = Row::new("GET /v1/authz, c=64").load(c64, 200);
        row.reference = "bare axum c=64".into();
        row.ratio = row.rate.map(|r| r / bare64.rate_of(200));
        row.target = "≥ 0.50, p99 < 10 ms".into();
        row.met = Some(row.ratio.unwrap_or(0.0) >= 0.50 && row.p99.unwrap_or(f64::MAX) < 10.0);
        self.check("GET /v1/authz, c=64", c64);
        self.rows.push(row);
    }

    /// The `GET /v1/me` rows; a PostgreSQL row is compared with the SQLite
    /// row of the same concurrency (the hot path must not touch the database).
    pub fn me(
        &mut self,
        c16: &mut Outcome,
        c64: &mut Outcome,
        bare16: &Outcome,
        bare64: &Outcome,
        postgres: Option<(&mut Outcome, &mut Outcome)>,
    ) {
        let (pg16, pg64) = postgres.unzip();
        let mut row = Row::new("GET /v1/me, c=16").load(c16, 200);
        row.reference = "bare axum c=16".into();
        row.ratio = row.rate.map(|r| r / bare16.rate_of(200));
        self.check("GET /v1/me, c=16", c16);
        self.rows.push(row);
        if let Some(pg) = pg16 {
            self.postgres_row("GET /v1/me, c=16", pg, "SQLite c=16", c16.rate_of(200), 0.9);
        }
        let mut row = Row::new("GET /v1/me, c=64").load(c64, 200);
        row.reference = "bare axum c=64".into();
        row.ratio = row.rate.map(|r| r / bare64.rate_of(200));
        row.target = "≥ 0.50, p99 < 10 ms".into();
        row.met = Some(row.ratio.unwrap_or(0.0) >= 0.50 && row.p99.unwrap_or(f64::MAX) < 10.0);
        self.check("GET /v1/me, c=64", c64);
        self.rows.push(row);
        if let Some(pg) = pg64 {
            self.postgres_row("GET /v1/me, c=64", pg, "SQLite c=64", c64.rate_of(200), 0.9);
        }
    }

    /// The cost of recording metrics: each row with metrics on against the
    /// same row with them off (same binary, same database, interleaved).
    pub fn metrics_cost(
        &mut self,
        me_on: &mut Outcome,
        me_off: &mut Outcome,
        login_on: &mut Outcome,
        login_off: &mut Outcome,
    ) {
        let target = "≥ 0.97 (no measurable cost)";
        self.paired(
            "GET /v1/me, c=64, metrics on",
            me_on,
            "GET /v1/me, c=64, metrics off",
            me_off,
            0.97,
            target,
        );
        self.paired(
            "login, c=32, metrics on",
            login_on,
            "login, c=32, metrics off",
            login_off,
            0.97,
            target,
        );
    }

    /// The HTTPS rows, each against the same request over plain HTTP.
    pub fn tls(
        &mut self,
        me_tls: &mut Outcome,
        me_plain: &mut Outcome,
        login_tls: &mut Outcome,
        login_plain: &mut Outcome,
    ) {
        self.paired(
            "GET /v1/me, c=64, HTTPS (keep-alive)",
            me_tls,
            "GET /v1/me, c=64, plain HTTP",
            me_plain,
            0.8,
            "≥ 0.8",
        );
        self.paired(
            "login, c=32, HTTPS (keep-alive)",
            login_tls,
            "login, c=32, plain HTTP",
            login_plain,
            0.9,
            "≥ 0.9 (hashing dominates)",
        );
    }

    /// A row and, before it, the row it is compared with (measured in the
    /// same rounds).
    fn paired(
        &mut self,
        name: &str,
        outcome: &mut Outcome,
        reference_name: &str,
        reference: &mut Outcome,
        min_ratio: f64,
        target: &str,
    ) {
        self.check(reference_name, reference);
        self.rows
            .push(Row::new(reference_name).load(reference, 200));
        let mut row = Row::new(name).load(outcome, 200);
        row.reference = reference_name.into();
        row.ratio = row.rate.map(|r| r / reference.rate_of(200));
        row.target = target.into();
        row.met = Some(row.ratio.unwrap_or(0.0) >= min_ratio);
        self.check(name, outcome);
        self.rows.push(row);
    }

    /// The refresh rows; a PostgreSQL row is compared with the SQLite row
    /// with as many chains.
    pub fn refresh(
        &mut self,
        c16: &mut Outcome,
        c64: &mut Outcome,
        bare16: &Outcome,
        bare64: &Outcome,
        postgres: Option<(&mut Outcome, &mut Outcome)>,
    ) {
        let (pg16, pg64) = postgres.unzip();
        for (name, outcome, bare, target, pg) in [
            ("refresh, 16 chains", c16, bare16, false, pg16),
            ("refresh, 64 chains", c64, bare64, true, pg64),
        ] {
            let mut row = Row::new(name).load(outcome, 200);
            row.reference = if target {
                "bare axum c=64"
            } else {
                "bare axum c=16"
            }
            .into();
            row.ratio = row.rate.map(|r| r / bare.rate_of(200));
            if target {
                row.target = "≥ 0.10".into();
                row.met = Some(row.ratio.unwrap_or(0.0) >= 0.10);
            }
            self.check(name, outcome);
            self.rows.push(row);
            if let Some(pg) = pg {
                let reference = if target {
                    "SQLite, 64 chains"
                } else {
                    "SQLite, 16 chains"
                };
                self.postgres_row(name, pg, reference, outcome.rate_of(200), 0.5);
            }
        }
    }

    /// A PostgreSQL row: `sqlite_name` with the store's label, its rate
    /// divided by `reference_rate`, met when that ratio reaches `target`.
    fn postgres_row(
        &mut self,
        sqlite_name: &str,
        outcome: &mut Outcome,
        reference: &str,
        reference_rate: f64,
        target: f64,
    ) {
        let label = self.postgres.as_deref().unwrap_or("PostgreSQL");
        let name = format!("{sqlite_name} ({label})");
        let mut row = Row::new(name.clone()).load(outcome, 200);
        row.reference = reference.into();
        row.ratio = row.rate.map(|r| r / reference_rate);
        row.target = format!("≥ {target:.2}");
        row.met = Some(row.ratio.is_some_and(|r| r >= target));
        self.check(&name, outcome);
        self.rows.push(row);
    }

    /// Notes a row whose requests were not all answered with 200.
    fn check(&mut self, name: &str, outcome: &Outcome) {
        if outcome.errors > 0 || outcome.statuses.keys().any(|s| *s != 200) {
            self.notes.push(format!(
                "{name}: statuses {:?}, errors {}",
                outcome.statuses, outcome.errors
            ));
        }
    }

    pub fn flood(&mut self, outcome: &mut Outcome, peak_rss: f64, after: u16, took: Duration) {
        let answered: u64 = outcome.statuses.values().sum();
        let mut row = Row::new(format!(
            "login flood, {} connections",
            crate::FLOOD_CONNECTIONS
        ))
        .load(outcome, 200);
        row.value = Some(format!(
            "{answered} answered ({:?}), {} unanswered, in {:.1} s",
            outcome.statuses,
            outcome.errors,
            took.as_secs_f64()
        ));
        row.target = "all answered, login after: 200".into();
        row.met = Some(outcome.errors == 0 && after == 200);
        self.rows.push(row);
        let mut row = Row::new("RSS peak (whole run, incl. flood)");
        row.value = Some(format!("{peak_rss:.1} MiB"));
        row.target = "≤ 400 MiB".into();
        row.met = Some(peak_rss <= 400.0);
        self.rows.push(row);
    }

    pub fn print(&self) {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_default();
        let stores = match &self.postgres {
            Some(label) => format!("SQLite and {label}"),
            None => "SQLite".into(),
        };
        println!(
            "Sesame benchmark, {date}; {} cores ({}); {stores}; {} s per row",
            self.cores,
            cpu_model(),
            self.duration.as_secs()
        );
        println!();
        println!("| row | req/s | p50 ms | p99 ms | value | reference | ratio | target | met |");
        println!("|---|---:|---:|---:|---|---|---:|---|---|");
        let num =
            |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_default();
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                num(r.rate, 1),
                num(r.p50, 2),
                num(r.p99, 2),
                r.value.as_deref().unwrap_or(""),
                r.reference,
                num(r.ratio, 2),
                r.target,
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                }
            );
        }
        for note in &self.notes {
            println!("\nnote: {note}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
