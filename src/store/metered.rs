//! Any store, timed: each operation's latency (and failures other than a
//! constraint's refusal) go to the `sesame_store_*` metrics, whichever
//! backend answers. A decorator rather than code in each backend, so that
//! a new backend or operation is measured without being told to.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::transfer::{AccountRecord, ImportRecord, RecordResults, SessionRecord};
use super::*;
use crate::metrics::Metrics;

/// A store whose every operation is timed into [`Metrics`].
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn time<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        let failed = matches!(
            &result,
            Err(StoreError::Database(_) | StoreError::Unavailable(_) | StoreError::Corrupt(_))
        );
        self.metrics
            .store_operation(operation, started.elapsed(), failed);
        result
    }
}

impl Store for MeteredStore {
    fn postgres(&self) -> Option<&postgres::PostgresStore> {
        self.inner.postgres()
    }

    fn set_clock(&self, clock: std::sync::Arc<dyn crate::clock::Clock>) {
        self.inner.set_clock(clock);
    }
}

#[async_trait]
impl AccountStore for MeteredStore {
    async fn create_account(&self, account: NewAccount) -> StoreResult<Account> {
        self.time("create_account", self.inner.create_account(account))
            .await
    }
    async fn find_account_by_login(
        &self,
        key: &str,
        mobile: Option<&str>,
    ) -> StoreResult<Option<Account>> {
        self.time(
            "find_account_by_login",
            self.inner.find_account_by_login(key, mobile),
        )
        .await
    }
    async fn find_account_for_login(
        &self,
        key: &str,
        mobile: Option<&str>,
        device: Option<&str>,
        address: Option<&str>,
    ) -> StoreResult<Option<LoginCandidate>> {
        self.time(
            "find_account_for_login",
            self.inner
                .find_account_for_login(key, mobile, device, address),
        )
        .await
    }
    async fn find_account_by_username(&self, username_key: &str) -> StoreResult<Option<Account>> {
        self.time(
            "find_account_by_username",
            self.inner.find_account_by_username(username_key),
        )
        .await
    }
    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.time("get_account", self.inner.get_account(id)).await
    }
    async fn list_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>> {
        self.time("list_accounts", self.inner.list_accounts(after_id, limit))
            .await
    }
    async fn search_accounts(&self, query: &AccountQuery) -> StoreResult<Vec<Account>> {
        self.time("search_accounts", self.inner.search_accounts(query))
            .await
    }
    async fn change_account(
        &self,
        id: AccountId,
        change: &AccountChange,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        self.time("change_account", self.inner.change_account(id, change, now))
            .await
    }
    async fn reset_api_calls(&self, id: AccountId, now: UnixTime) -> StoreResult<bool> {
        self.time("reset_api_calls", self.inner.reset_api_calls(id, now))
            .await
    }
    async fn count_accounts_with_role(&self, role: &str) -> StoreResult<i64> {
        self.time(
            "count_accounts_with_role",
            self.inner.count_accounts_with_role(role),
        )
        .await
    }
    async fn foreign_hashes(
        &self,
        after_id: AccountId,
        limit: u32,
    ) -> StoreResult<Vec<(AccountId, String, UnixTime)>> {
        self.time("foreign_hashes", self.inner.foreign_hashes(after_id, limit))
            .await
    }
    async fn role_names(&self) -> StoreResult<Vec<String>> {
        self.time("role_names", self.inner.role_names()).await
    }
    async fn set_password(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        changed: bool,
        replacing: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<bool> {
        self.time(
            "set_password",
            self.inner
                .set_password(id, verifiers, changed, replacing, now),
        )
        .await
    }
    async fn set_password_ending_sessions(
        &self,
        id: AccountId,
        verifiers: &PasswordVerifiers,
        replacing: Option<&str>,
        keep: &Kept,
        reason: &str,
        now: UnixTime,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        self.time(
            "set_password_ending_sessions",
            self.inner
                .set_password_ending_sessions(id, verifiers, replacing, keep, reason, now),
        )
        .await
    }
    async fn set_locked(&self, id: AccountId, locked: bool, now: UnixTime) -> StoreResult<bool> {
        self.time("set_locked", self.inner.set_locked(id, locked, now))
            .await
    }
    async fn delete_account(&self, id: AccountId) -> StoreResult<bool> {
        self.time("delete_account", self.inner.delete_account(id))
            .await
    }
    async fn record_login_failure(
        &self,
        id: AccountId,
        from_unknown_client: bool,
    ) -> StoreResult<i64> {
        self.time(
            "record_login_failure",
            self.inner.record_login_failure(id, from_unknown_client),
        )
        .await
    }
    async fn is_known_client(
        &self,
        id: AccountId,
        kind: ClientKind,
        value: &str,
    ) -> StoreResult<bool> {
        self.time(
            "is_known_client",
            self.inner.is_known_client(id, kind, value),
        )
        .await
    }
    async fn api_usage(&self, id: AccountId) -> StoreResult<Option<ApiUsage>> {
        self.time("api_usage", self.inner.api_usage(id)).await
    }
    async fn add_api_calls(
        &self,
        counts: &[(AccountId, i64, UnixTime)],
    ) -> StoreResult<Vec<(AccountId, ApiUsage)>> {
        self.time("add_api_calls", self.inner.add_api_calls(counts))
            .await
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn record_login(
        &self,
        login: &LoginRecord,
        session: &NewSession,
        refresh: &NewRefreshToken,
        replace_platform: bool,
    ) -> StoreResult<Option<Vec<SessionId>>> {
        self.time(
            "record_login",
            self.inner
                .record_login(login, session, refresh, replace_platform),
        )
        .await
    }
    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.time("get_session", self.inner.get_session(id)).await
    }
    async fn count_live_sessions(&self, now: UnixTime) -> StoreResult<i64> {
        self.time("count_live_sessions", self.inner.count_live_sessions(now))
            .await
    }
    async fn list_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.time(
            "list_live_sessions",
            self.inner.list_live_sessions(account_id, now),
        )
        .await
    }
    async fn page_live_sessions(
        &self,
        account_id: AccountId,
        now: UnixTime,
        after: Option<&SessionCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        self.time(
            "page_live_sessions",
            self.inner.page_live_sessions(account_id, now, after, limit),
        )
        .await
    }
    async fn revoke_session(
        &self,
        id: &SessionId,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<bool> {
        self.time("revoke_session", self.inner.revoke_session(id, now, reason))
            .await
    }
    async fn revoke_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> StoreResult<Vec<SessionId>> {
        self.time(
            "revoke_account_sessions",
            self.inner
                .revoke_account_sessions(account_id, keep, now, reason),
        )
        .await
    }
    async fn find_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
        self.time("find_refresh_token", self.inner.find_refresh_token(hash))
            .await
    }
    async fn find_refresh_token_with_session(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        self.time(
            "find_refresh_token_with_session",
            self.inner.find_refresh_token_with_session(hash),
        )
        .await
    }
    async fn replace_access_token(
        &self,
        session_id: &SessionId,
        hash: &TokenHash,
        expires_at: UnixTime,
    ) -> StoreResult<Option<bool>> {
        self.time(
            "replace_access_token",
            self.inner
                .replace_access_token(session_id, hash, expires_at),
        )
        .await
    }
    async fn find_access_token(&self, hash: &TokenHash) -> StoreResult<Option<OpaqueAccessToken>> {
        self.time("find_access_token", self.inner.find_access_token(hash))
            .await
    }
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor_salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool> {
        self.time(
            "rotate_refresh_token",
            self.inner
                .rotate_refresh_token(old, successor_salt, successor, now),
        )
        .await
    }
    async fn find_and_rotate_refresh_token(
        &self,
        hash: &TokenHash,
        successor_salt: &[u8],
        successors: &SuccessorHashes,
        now: UnixTime,
    ) -> StoreResult<Option<(RefreshToken, Session, bool)>> {
        self.time(
            "find_and_rotate_refresh_token",
            self.inner
                .find_and_rotate_refresh_token(hash, successor_salt, successors, now),
        )
        .await
    }
    async fn purge(&self, cutoffs: &PurgeCutoffs, batch: u32) -> StoreResult<Purged> {
        self.time("purge", self.inner.purge(cutoffs, batch)).await
    }
}

#[async_trait]
impl AuditStore for MeteredStore {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        self.time(
            "insert_audit_events",
            self.inner.insert_audit_events(events),
        )
        .await
    }
    async fn list_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.time("list_audit_events", self.inner.list_audit_events(query))
            .await
    }
    async fn purge_audit_events(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        self.time(
            "purge_audit_events",
            self.inner.purge_audit_events(before, batch),
        )
        .await
    }
}

#[async_trait]
impl KeyStore for MeteredStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        self.time("signing_keys", self.inner.signing_keys()).await
    }
    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        self.time("insert_signing_key", self.inner.insert_signing_key(key))
            .await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.time("delete_signing_key", self.inner.delete_signing_key(kid))
            .await
    }
    async fn deployment_secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: UnixTime,
    ) -> StoreResult<Vec<u8>> {
        self.time(
            "deployment_secret",
            self.inner.deployment_secret(name, fresh, now),
        )
        .await
    }
}

#[async_trait]
impl TransferStore for MeteredStore {
    async fn export_accounts(&self, after_id: AccountId, limit: u32) -> StoreResult<Vec<Account>> {
        self.time(
            "export_accounts",
            self.inner.export_accounts(after_id, limit),
        )
        .await
    }
    async fn export_sessions(
        &self,
        after_id: &str,
        limit: u32,
        now: UnixTime,
        max_chain: u32,
        of_clients: bool,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.time(
            "export_sessions",
            self.inner
                .export_sessions(after_id, limit, now, max_chain, of_clients),
        )
        .await
    }
    async fn import_batch(&self, records: Vec<ImportRecord>) -> StoreResult<RecordResults> {
        self.time("import_batch", self.inner.import_batch(records))
            .await
    }
    async fn check_batch(&self, records: &[ImportRecord]) -> StoreResult<RecordResults> {
        self.time("check_batch", self.inner.check_batch(records))
            .await
    }
    async fn update_accounts(
        &self,
        records: &[AccountRecord],
        now: UnixTime,
    ) -> StoreResult<(RecordResults, crate::store::transfer::UpdateEffects)> {
        self.time("update_accounts", self.inner.update_accounts(records, now))
            .await
    }
    async fn check_updates(&self, records: &[AccountRecord]) -> StoreResult<RecordResults> {
        self.time("check_updates", self.inner.check_updates(records))
            .await
    }
}

#[async_trait]
impl RoleStore for MeteredStore {
    async fn list_roles(&self) -> StoreResult<Vec<Role>> {
        self.time("list_roles", self.inner.list_roles()).await
    }
    async fn create_role(&self, role: &Role) -> StoreResult<()> {
        self.time("create_role", self.inner.create_role(role)).await
    }
    async fn update_role(&self, name: &str, change: &RoleChange) -> StoreResult<bool> {
        self.time("update_role", self.inner.update_role(name, change))
            .await
    }
    async fn delete_role(&self, name: &str) -> StoreResult<bool> {
        self.time("delete_role", self.inner.delete_role(name)).await
    }
}

#[async_trait]
impl OAuthStore for MeteredStore {
    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        self.time("list_clients", self.inner.list_clients()).await
    }
    async fn get_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        self.time("get_client", self.inner.get_client(id)).await
    }
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        self.time("create_client", self.inner.create_client(client))
            .await
    }
    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        self.time("delete_client", self.inner.delete_client(id))
            .await
    }
    async fn set_client_secret(
        &self,
        id: &str,
        secret_hash: Option<&TokenHash>,
    ) -> StoreResult<bool> {
        self.time(
            "set_client_secret",
            self.inner.set_client_secret(id, secret_hash),
        )
        .await
    }
    async fn insert_code(&self, code: &AuthorizationCode, now: UnixTime) -> StoreResult<()> {
        self.time("insert_code", self.inner.insert_code(code, now))
            .await
    }
    async fn find_code(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> StoreResult<Option<AuthorizationCode>> {
        self.time("find_code", self.inner.find_code(hash, now))
            .await
    }
    async fn redeem_code(
        &self,
        hash: &TokenHash,
        session: &NewSession,
        refresh: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<Redemption> {
        self.time(
            "redeem_code",
            self.inner.redeem_code(hash, session, refresh, now),
        )
        .await
    }
    async fn insert_oauth_session(&self, grant: &OAuthSession) -> StoreResult<()> {
        self.time(
            "insert_oauth_session",
            self.inner.insert_oauth_session(grant),
        )
        .await
    }
    async fn get_oauth_session(&self, session_id: &SessionId) -> StoreResult<Option<OAuthSession>> {
        self.time(
            "get_oauth_session",
            self.inner.get_oauth_session(session_id),
        )
        .await
    }
    async fn move_browser_children(&self, from: &SessionId, to: &SessionId) -> StoreResult<()> {
        self.time(
            "move_browser_children",
            self.inner.move_browser_children(from, to),
        )
        .await
    }
    async fn sessions_from_browser(
        &self,
        browser_session: &SessionId,
    ) -> StoreResult<Vec<SessionId>> {
        self.time(
            "sessions_from_browser",
            self.inner.sessions_from_browser(browser_session),
        )
        .await
    }
    async fn sessions_of_client(&self, client_id: &str) -> StoreResult<Vec<SessionId>> {
        self.time(
            "sessions_of_client",
            self.inner.sessions_of_client(client_id),
        )
        .await
    }
}
