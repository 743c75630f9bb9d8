//! `sesame export` and `sesame import`: moving a deployment between backends.
//!
//! The file format and the rules of what may be imported live in
//! `core::transfer`; this module reads and writes files, batches lines,
//! shows progress and reports.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::{displayable_url, open_core, open_core_unchanged, open_scratch_core};
use crate::config::Config;
use crate::core::Core;
use crate::core::clock::SystemClock;
use crate::core::foreign::{FirebaseParams, Template};
use crate::core::transfer::{
    self, Import, ImportCounts, ImportOptions, MAX_LINE_BYTES, Refusal, check_header, csv_account,
};
use crate::store::StoreError;

/// Accounts read per page of an export.
const ACCOUNT_PAGE: u32 = 500;
/// Sessions read per page of an export (each carries its refresh-token chain).
const SESSION_PAGE: u32 = 200;
/// Largest `--batch`.
const MAX_BATCH: usize = 10_000;

/// Options of `sesame export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Also export live sessions with their refresh-token chains (hashes
    /// only), so that signed-in clients stay signed in after the move.
    #[arg(long)]
    sessions: bool,
    /// Write to FILE (created with mode 0600: it holds password verifiers
    /// and client secret hashes)
    /// instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Options of `sesame import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    file: PathBuf,
    /// Check every line against the rules and the database, writing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Lines per transaction.
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
    batch: u32,
    /// The legacy digest of lines whose password_hash_format is "template",
    /// e.g. 'md5(sha1(password) + "Carey_Shop#")' (README: Moving your users).
    #[arg(long, value_name = "EXPR")]
    template: Option<String>,
    /// A named constant of the template; repeat for several.
    #[arg(long = "template-const", value_name = "NAME=VALUE")]
    template_consts: Vec<String>,
    /// Firebase's `base64_signer_key` (with the three below: the project's
    /// password hash parameters, for lines of format firebase-scrypt). A
    /// secret: better given in the environment than on the command line,
    /// which other users of the machine can read.
    /// Without the three below, it is not used (a variable exported for
    /// one import does not stand in the way of others).
    #[arg(
        long,
        value_name = "BASE64",
        env = "SESAME_FIREBASE_SIGNER_KEY",
        hide_env_values = true
    )]
    firebase_signer_key: Option<String>,
    /// Firebase's `base64_salt_separator`.
    #[arg(long, value_name = "BASE64", requires = "firebase_signer_key")]
    firebase_salt_separator: Option<String>,
    /// Firebase's `rounds`.
    #[arg(long, value_name = "N", requires = "firebase_signer_key")]
    firebase_rounds: Option<u32>,
    /// Firebase's `mem_cost`.
    #[arg(long, value_name = "N", requires = "firebase_signer_key")]
    firebase_mem_cost: Option<u8>,
    /// What to do with a line whose account (same id or username), session,
    /// client or role (defined otherwise) is already there: refuse it (fail),
    /// skip it (an import run again), or replace the account or role that
    /// has its id or name (update; a client or session is skipped).
    #[arg(long, value_enum, default_value_t = OnConflict::Fail)]
    on_conflict: OnConflict,
    /// The file's format: the export's JSON lines, or CSV with a header row
    /// naming the account fields (other columns become profile attributes).
    #[arg(long, value_enum, default_value_t = FileFormat::Jsonl)]
    format: FileFormat,
}

/// `--on-conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnConflict {
    /// Refuse the line (exit status 1).
    Fail,
    /// Count it as skipped.
    Skip,
    /// Replace the account that has the line's id, or the role that has its
    /// name, with the line (the account's sessions stay); a session or
    /// client already there is skipped.
    Update,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// JSON lines after the export header.
    Jsonl,
    /// CSV with a header row; every row an account.
    Csv,
}

/// A failure with its own exit status: 1 when lines were refused, 2 when the
/// file cannot be read or is not an export.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status for an error of any command: a [`Failure`]'s own, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<Failure>().map_or(1, |f| f.code)
}

fn unreadable(message: String) -> anyhow::Error {
    Failure { code: 2, message }.into()
}

/// "1 account", "2 accounts".
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A progress display on stderr, only when stderr is a terminal.
/// Lines between two progress lines when stderr is not a terminal.
const PROGRESS_EVERY: u64 = 10_000;

fn progress(total_bytes: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total_bytes {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        ),
        None => (ProgressBar::new_spinner(), "{spinner} {elapsed} {msg}"),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `sesame export`.
pub async fn export(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    super::init_logging("warn");
    let core = open_core(&config, Arc::new(SystemClock)).await?;
    let result = match &args.output {
        Some(path) => export_to_file(&core, path, args.sessions).await,
        None => {
            let mut out = BufWriter::new(std::io::stdout());
            let counts = write_export(&core, &mut out, args.sessions).await?;
            out.flush().context("cannot write to standard output")?;
            eprintln!("exported {counts}");
            Ok(())
        }
    };
    super::audited(&core, result).await
}

/// Writes `PATH.partial` (mode 0600), then renames it to `PATH`, so that a
/// file at `PATH` is always a whole export.
async fn export_to_file(core: &Core, path: &Path, sessions: bool) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // A leftover from an interrupted run may have other permissions.
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    let written = async {
        let counts = write_export(core, &mut out, sessions).await?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&partial, path)?;
        anyhow::Ok(counts)
    }
    .await;
    match written {
        Ok(counts) => {
            println!("exported {counts} to {}", path.display());
            Ok(())
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error.context(format!("cannot write {}", path.display())))
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy)]
struct Exported {
    roles: u64,
    clients: u64,
    accounts: u64,
    sessions: u64,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, ", count(self.roles, "role"))?;
        if self.clients > 0 {
            write!(f, "{}, ", count(self.clients, "OAuth client"))?;
        }
        write!(
            f,
            "{} and {}",
            count(self.accounts, "account"),
            count(self.sessions, "session")
        )
    }
}

/// Writes the header, every role, every OAuth client, every account and
/// (with `sessions`) every live session.
async fn write_export(
    core: &Core,
    out: &mut impl Write,
    sessions: bool,
) -> anyhow::Result<Exported> {
    let bar = progress(None);
    writeln!(out, "{}", core.export_header()?)?;
    // Roles and clients first: accounts name roles, sessions clients.
    let roles = core.export_roles().await?;
    let clients = core.export_clients().await?;
    for line in roles.iter().chain(&clients) {
        writeln!(out, "{line}")?;
    }
    let (mut accounts, mut exported_sessions) = (0u64, 0u64);
    let mut after = 0;
    loop {
        let page = core.export_accounts(after, ACCOUNT_PAGE).await?;
        let Some(next) = page.next else { break };
        after = next;
        for line in &page.lines {
            writeln!(out, "{line}")?;
        }
        accounts += page.lines.len() as u64;
        bar.set_message(format!("{} exported", count(accounts, "account")));
    }
    // The sessions of OAuth clients last: each names the browser session
    // it came from, which the import looks for.
    for of_clients in [false, true].into_iter().filter(|_| sessions) {
        let mut after = String::new();
        loop {
            let page = core
                .export_sessions(&after, SESSION_PAGE, of_clients)
                .await?;
            let Some(next) = page.next else { break };
            after = next;
            for line in &page.lines {
                writeln!(out, "{line}")?;
            }
            exported_sessions += page.lines.len() as u64;
            bar.set_message(format!(
                "{} and {} exported",
                count(accounts, "account"),
                count(exported_sessions, "session")
            ));
        }
    }
    bar.finish_and_clear();
    let exported = Exported {
        roles: roles.len() as u64,
        clients: clients.len() as u64,
        accounts,
        sessions: exported_sessions,
    };
    core.export_finished(
        exported.roles,
        exported.clients,
        accounts,
        exported_sessions,
    );
    Ok(exported)
}

/// A line read with bounded memory.
enum Line {
    /// A whole line, without its line ending.
    Text(String),
    /// Longer than [`MAX_LINE_BYTES`]; skipped without being held.
    TooLong,
    /// Not UTF-8.
    NotUtf8,
    /// A CSV row that is not an account line, and why.
    Invalid(String),
}

/// Where import lines come from: the export's JSON lines, or CSV rows
/// turned into such lines.
trait Source {
    /// The next line, numbered from 1 (the header is line 1).
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>>;
    /// Lines read so far.
    fn number(&self) -> u64;
    /// Bytes read so far.
    fn bytes(&self) -> u64;
    /// The line an unreadable entry starts at (after `next_line` failed):
    /// every line before it was handled.
    fn unread_from(&self) -> u64 {
        self.number() + 1
    }
}

impl<R: BufRead> Source for Lines<R> {
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>> {
        Lines::next_line(self)
    }

    fn number(&self) -> u64 {
        self.number
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// CSV rows (after the header row) as account lines.
struct CsvRows<R: Read> {
    reader: csv::Reader<Bounded<R>>,
    /// Bytes read since the last record ended, shared with the reader.
    read: Arc<AtomicUsize>,
    headers: Vec<String>,
    record: csv::StringRecord,
    /// The line the record being read starts at (a quoted field may run
    /// over many lines before it turns out unreadable).
    starts_at: u64,
}

/// A reader that fails once more than [`MAX_LINE_BYTES`] (and the CSV
/// reader's read-ahead) have been read for one record: a quoted field may
/// span any number of lines, and the CSV reader would hold it all.
struct Bounded<R> {
    inner: R,
    read: Arc<AtomicUsize>,
}

/// What the CSV reader may have read ahead of the record it returns.
const CSV_READ_AHEAD: usize = 64 * 1024;

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.fetch_add(n, Ordering::Relaxed) + n;
        if total > MAX_LINE_BYTES + CSV_READ_AHEAD {
            return Err(std::io::Error::other(format!(
                "a CSV record longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        Ok(n)
    }
}

impl<R: Read> CsvRows<R> {
    /// Reads the header row; it must name `id`, `username`, `password_hash`
    /// and `created_at`.
    fn new(reader: R) -> Result<Self, String> {
        let read = Arc::new(AtomicUsize::new(0));
        let reader = Bounded {
            inner: reader,
            read: Arc::clone(&read),
        };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| format!("cannot read the header row: {e}"))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        // A column named twice: which value would count? Neither, silently.
        for (i, header) in headers.iter().enumerate() {
            if headers[..i].contains(header) {
                return Err(format!("the header row names the column {header:?} twice"));
            }
        }
        for required in ["id", "username", "password_hash", "created_at"] {
            if !headers.iter().any(|h| h == required) {
                return Err(format!("the header row has no {required} column"));
            }
        }
        read.store(0, Ordering::Relaxed);
        Ok(Self {
            reader,
            read,
            headers,
            record: csv::StringRecord::new(),
            starts_at: 2,
        })
    }
}

impl<R: Read> Source for CsvRows<R> {
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>> {
        self.starts_at = self.reader.position().line();
        let outcome = self.reader.read_record(&mut self.record);
        self.read.store(0, Ordering::Relaxed);
        match outcome {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                let row: Vec<String> = self.record.iter().map(str::to_owned).collect();
                Ok(Some((
                    line,
                    match csv_account(&self.headers, &row) {
                        Ok(json) => Line::Text(json),
                        Err(reason) => Line::Invalid(reason),
                    },
                )))
            }
            Err(error) => match error.kind() {
                csv::ErrorKind::Io(_) => Err(std::io::Error::other(error.to_string())),
                csv::ErrorKind::Utf8 { pos, .. } => {
                    let line = pos.as_ref().map_or(0, csv::Position::line);
                    Ok(Some((line, Line::NotUtf8)))
                }
                _ => {
                    let line = error.position().map_or(0, csv::Position::line);
                    Ok(Some((line, Line::Invalid("malformed CSV".into()))))
                }
            },
        }
    }

    fn number(&self) -> u64 {
        self.reader.position().line().saturating_sub(1)
    }

    fn bytes(&self) -> u64 {
        self.reader.position().byte()
    }

    fn unread_from(&self) -> u64 {
        self.starts_at
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`], counting lines and bytes; a
/// longer line is consumed and dropped, never held whole.
struct Lines<R> {
    reader: R,
    number: u64,
    bytes: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            number: 0,
            bytes: 0,
            buffer: Vec::new(),
        }
    }

    /// The next line and its 1-based number, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>> {
        self.buffer.clear();
        let (mut any, mut too_long) = (false, false);
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (chunk, ends) = match available.iter().position(|b| *b == b'\n') {
                Some(end) => (&available[..=end], true),
                None => (available, false),
            };
            // Room for the line and its "\r\n".
            if !too_long && self.buffer.len() + chunk.len() <= MAX_LINE_BYTES + 2 {
                self.buffer.extend_from_slice(chunk);
            } else if !too_long {
                too_long = true;
                self.buffer = Vec::new();
            }
            let consumed = chunk.len();
            self.reader.consume(consumed);
            self.bytes += consumed as u64;
            if ends {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
        }
        if too_long || self.buffer.len() > MAX_LINE_BYTES {
            self.buffer = Vec::new();
            return Ok(Some((self.number, Line::TooLong)));
        }
        let line = match String::from_utf8(std::mem::take(&mut self.buffer)) {
            Ok(text) => Line::Text(text),
            Err(_) => Line::NotUtf8,
        };
        Ok(Some((self.number, line)))
    }
}

/// `sesame import`.
pub async fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    super::init_logging("warn");
    let (reader, size): (Box<dyn Read>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = File::open(&args.file)
            .map_err(|e| unreadable(format!("cannot read {}: {e}", args.file.display())))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let reader = BufReader::with_capacity(64 * 1024, reader);
    // The header is checked before the database is opened.
    let bad_header = |reason: &str| unreadable(format!("{}: {reason}", args.file.display()));
    let mut lines: Box<dyn Source> = match args.format {
        FileFormat::Jsonl => {
            let mut lines = Lines::new(reader);
            match lines.next_line() {
                Ok(Some((_, Line::Text(text)))) => {
                    check_header(&text).map_err(|e| bad_header(&e))?;
                }
                Ok(Some(_)) => {
                    return Err(bad_header("the first line is not a Sesame export header"));
                }
                Ok(None) => return Err(bad_header("empty file, no header")),
                Err(error) => return Err(bad_header(&format!("cannot read: {error}"))),
            }
            Box::new(lines)
        }
        FileFormat::Csv => Box::new(CsvRows::new(reader).map_err(|e| bad_header(&e))?),
    };
    let template = match &args.template {
        Some(source) => {
            let mut constants = Vec::new();
            for (n, pair) in args.template_consts.iter().enumerate() {
                // The value may be a pepper: never repeated.
                let Some((name, value)) = pair.split_once('=') else {
                    return Err(unreadable(format!(
                        "--template-const number {}: expected NAME=VALUE",
                        n + 1
                    )));
                };
                constants.push((name.to_owned(), value.to_owned()));
            }
            Some(
                Template::parse(source, &constants)
                    .map_err(|e| unreadable(format!("--template: {e}")))?,
            )
        }
        None => None,
    };
    let firebase = match (
        &args.firebase_signer_key,
        &args.firebase_salt_separator,
        args.firebase_rounds,
        args.firebase_mem_cost,
    ) {
        (Some(key), Some(separator), Some(rounds), Some(mem_cost)) => Some(
            FirebaseParams::parse(key, separator, rounds, mem_cost)
                .map_err(|e| unreadable(format!("--firebase-…: {e}")))?,
        ),
        (_, None, None, None) => None,
        _ => {
            return Err(unreadable(
                "--firebase-salt-separator, --firebase-rounds and --firebase-mem-cost go \
                 together, with the signer key"
                    .into(),
            ));
        }
    };
    // Kept until the end: the scratch database of a dry run, if any.
    let (core, _scratch) = if args.dry_run {
        open_for_dry_run(&config).await?
    } else {
        (open_core(&config, Arc::new(SystemClock)).await?, None)
    };
    let mut import = core
        .start_import(ImportOptions {
            dry_run: args.dry_run,
            template,
            firebase,
            on_conflict: match args.on_conflict {
                OnConflict::Fail => transfer::OnConflict::Fail,
                OnConflict::Skip => transfer::OnConflict::Skip,
                OnConflict::Update => transfer::OnConflict::Update,
            },
        })
        .await?;
    let result = import_lines(&core, &mut import, &mut *lines, args.batch as usize, size).await;
    core.import_finished(&import);
    let counts = import.counts();
    // Also when reading stopped: what the lines before were made into.
    println!("{}", summary(&import, counts, lines.number()));
    super::audited(&core, result).await?;
    if counts.refused > 0 {
        return Err(Failure {
            code: 1,
            message: format!("{} refused", count(counts.refused, "line")),
        }
        .into());
    }
    Ok(())
}

/// The core a dry run checks against: the database as it is, changed in
/// nothing. A database never set up has nothing a line could collide with,
/// so the file is checked against an empty one made in a scratch directory
/// (removed when the returned guard is dropped) instead of setting it up.
async fn open_for_dry_run(
    config: &Config,
) -> anyhow::Result<(Arc<Core>, Option<tempfile::TempDir>)> {
    let error = match open_core_unchanged(config, Arc::new(SystemClock)).await {
        Ok(core) => return Ok((core, None)),
        Err(error) => error,
    };
    if !matches!(error.downcast_ref(), Some(StoreError::NoSchema)) {
        return Err(error);
    }
    eprintln!(
        "the database {} is not set up yet, and a dry run sets up nothing: the lines are \
         checked against each other and an empty database",
        displayable_url(&config.database.url)
    );
    let scratch = tempfile::Builder::new()
        .prefix("sesame-dry-run-")
        .tempdir()
        .context("cannot make a scratch directory for the dry run")?;
    let core = open_scratch_core(config, scratch.path(), Arc::new(SystemClock)).await?;
    Ok((core, Some(scratch)))
}

fn summary(import: &Import, c: ImportCounts, lines: u64) -> String {
    let mut what = String::new();
    for (n, noun) in [(c.roles, "role"), (c.clients, "OAuth client")] {
        if n > 0 {
            what.push_str(&format!("{}, ", count(n, noun)));
        }
    }
    let what = format!(
        "{what}{} and {}",
        count(c.accounts, "account"),
        count(c.sessions, "session")
    );
    let mut summary = if import.is_dry_run() {
        format!(
            "checked {}: would import {what}; {} refused",
            count(lines, "line"),
            count(c.refused, "line")
        )
    } else {
        format!("imported {what}; {} refused", count(c.refused, "line"))
    };
    for (n, noun) in [(c.updated, "account"), (c.roles_updated, "role")] {
        if n > 0 {
            let updated = if import.is_dry_run() {
                "would be updated"
            } else {
                "updated"
            };
            summary.push_str(&format!("; {} {updated}", count(n, noun)));
        }
    }
    if c.skipped > 0 {
        summary.push_str(&format!(
            "; {} already there, skipped",
            count(c.skipped, "line")
        ));
    }
    if c.expired > 0 {
        summary.push_str(&format!(
            "; {} expired since the export, skipped",
            count(c.expired, "session")
        ));
    }
    if !import.by_format().is_empty() {
        let formats: Vec<String> = import
            .by_format()
            .iter()
            .map(|(format, n)| format!("{format} {n}"))
            .collect();
        summary.push_str(&format!("\npassword hashes: {}", formats.join(", ")));
    }
    summary
}

/// Reads, batches and imports every line after the header; refusals are
/// reported on stderr in line order, once per batch.
async fn import_lines(
    core: &Core,
    import: &mut Import,
    lines: &mut dyn Source,
    batch_size: usize,
    size: Option<u64>,
) -> anyhow::Result<()> {
    let bar = progress(size);
    // Without a terminal (a log, CI), a plain line every PROGRESS_EVERY lines.
    let plain = !std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut reported = 0;
    let mut batch = Vec::with_capacity(batch_size);
    let mut refused: Vec<Refusal> = Vec::new();
    // A line that cannot be read ends the input: the lines gathered before
    // it are still imported (and their refusals reported), so that a run
    // resumed from that line loses none.
    let mut unread = None;
    loop {
        let next = lines.next_line().unwrap_or_else(|e| {
            unread = Some(unreadable(format!(
                "cannot read line {}: {e}; every line before it was handled (see the summary)",
                lines.unread_from()
            )));
            None
        });
        let end = next.is_none();
        if let Some((number, line)) = next {
            match line {
                Line::Text(text) => match import.parse(number, &text) {
                    Ok(Some(parsed)) => batch.push(parsed),
                    Ok(None) => {}
                    Err(refusal) => refused.push(refusal),
                },
                Line::TooLong => refused.push(import.refuse(
                    number,
                    format!("longer than {MAX_LINE_BYTES} bytes; skipped"),
                )),
                Line::NotUtf8 => refused.push(import.refuse(number, "not UTF-8")),
                Line::Invalid(reason) => refused.push(import.refuse(number, reason)),
            }
            bar.set_position(lines.bytes());
        }
        if end || batch.len() + refused.len() >= batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            refused.extend(core.import_batch(import, full).await?);
            refused.sort_by_key(|r| r.line);
            bar.suspend(|| {
                for refusal in refused.drain(..) {
                    eprintln!("{refusal}");
                }
            });
            let c = import.counts();
            bar.set_message(format!(
                "{}, {}, {} refused",
                count(c.accounts, "account"),
                count(c.sessions, "session"),
                count(c.refused, "line")
            ));
            if plain && lines.number() / PROGRESS_EVERY > reported && !end {
                reported = lines.number() / PROGRESS_EVERY;
                let rate = lines.number() as f64 / started.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "progress: {} read, {}, {}, {} refused; {rate:.0} lines/s",
                    count(lines.number(), "line"),
                    count(c.accounts, "account"),
                    count(c.sessions, "session"),
                    count(c.refused, "line")
                );
            }
        }
        if end {
            break;
        }
    }
    bar.finish_and_clear();
    match unread {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Vec<(u64, String)> {
        let mut lines = Lines::new(BufReader::with_capacity(16, input));
        let mut out = Vec::new();
        while let Some((number, line)) = lines.next_line().unwrap() {
            out.push((
                number,
                match line {
                    Line::Text(text) => text,
                    Line::TooLong => "<too long>".into(),
                    Line::NotUtf8 => "<not utf-8>".into(),
                    Line::Invalid(reason) => reason,
                },
            ));
        }
        assert_eq!(lines.bytes, input.len() as u64);
        out
    }

    #[test]
    fn lines_are_bounded_and_numbered() {
        let mut input = b"first\r\nsecond\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        input.extend(b"\n\xff\xfe\nlast");
        let lines = read_all(&input);
        assert_eq!(
            lines,
            vec![
                (1, "first".to_owned()),
                (2, "second".to_owned()),
                (3, "<too long>".to_owned()),
                (4, "<not utf-8>".to_owned()),
                (5, "last".to_owned()),
            ]
        );
        let exactly = vec![b'y'; MAX_LINE_BYTES];
        assert_eq!(read_all(&exactly)[0].1.len(), MAX_LINE_BYTES);
    }

    #[test]
    fn csv_records_are_bounded_however_many_lines_a_field_spans() {
        let header = "id,username,password_hash,created_at\n";
        let row = "1,ana,$2y$10$abc,1700000000\n";
        // Many records, each far below the bound: the count restarts at each.
        let many = format!("{header}{}", row.repeat(100_000));
        let mut rows = CsvRows::new(many.as_bytes()).unwrap();
        let mut count = 0;
        while rows.next_line().unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 100_000);
        // One quoted field of 2 MiB over many lines: refused, not held.
        let mut huge = format!("{header}2,bob,\"");
        huge.push_str(&"x\n".repeat(MAX_LINE_BYTES));
        huge.push_str("\",1700000000\n");
        let mut rows = CsvRows::new(huge.as_bytes()).unwrap();
        let Err(error) = rows.next_line() else {
            panic!("a 2 MiB record was read");
        };
        assert!(error.to_string().contains("longer than"), "{error}");
    }
}
