//! Client authentication on the Flight SQL port: the Flight handshake trades a user name
//! and password (HTTP basic auth) for a bearer token, which every later call carries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use quiver_core::config::UserCredentials;
use quiver_core::security::constant_time_eq;
use quiver_core::ticket::random_secret;
use quiver_core::users_file::HashedUser;
use tonic::service::Interceptor;

use crate::audit::AuditLog;
use tonic::{Request, Status};

/// The user a call was authenticated as, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser(pub String);

/// Standard base64 with or without padding: clients differ (Go's Flight client sends
/// it unpadded).
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Most tokens kept at once; the oldest are dropped past this.
const MAX_TOKENS: usize = 100_000;

/// Users, passwords and the tokens handed out to them.
#[derive(Debug)]
pub struct Authenticator {
    users: Vec<UserCredentials>,
    /// Users of the users file: password hashes, never passwords.
    hashed_users: Vec<HashedUser>,
    token_lifetime: Duration,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Recent failed logins per client address, to slow down guessing.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failed logins one address may make within [`FAILURE_WINDOW`] before further attempts
/// are refused until the window has passed.
const MAX_FAILED_LOGINS: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl Authenticator {
    pub fn new(
        users: Vec<UserCredentials>,
        hashed_users: Vec<HashedUser>,
        token_lifetime: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            users,
            hashed_users,
            token_lifetime,
            tokens: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Whether clients must log in.
    pub fn required(&self) -> bool {
        !self.users.is_empty() || !self.hashed_users.is_empty()
    }

    /// Refuses a login from `client` while it has failed too often lately.
    fn check_not_throttled(&self, client: Option<IpAddr>) -> Result<(), Status> {
        let Some(client) = client else {
            return Ok(());
        };
        let mut failures = self.failures.lock();
        match failures.get(&client) {
            Some((count, since))
                if since.elapsed() < FAILURE_WINDOW && *count >= MAX_FAILED_LOGINS =>
            {
                return Err(Status::unauthenticated(format!(
                    "too many failed logins from {client}: try again in a minute"
                )));
            }
            Some((_, since)) if since.elapsed() < FAILURE_WINDOW => {}
            Some(_) => {
                failures.remove(&client);
            }
            None => {}
        }
        Ok(())
    }

    fn record_login(&self, client: Option<IpAddr>, accepted: bool) {
        let Some(client) = client else {
            return;
        };
        let mut failures = self.failures.lock();
        if accepted {
            failures.remove(&client);
            return;
        }
        if failures.len() >= MAX_TOKENS {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(client).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// A new bearer token for `user`.
    pub fn issue_token(&self, user: &str) -> String {
        let token = random_secret();
        let expires = Instant::now() + self.token_lifetime;
        let mut tokens = self.tokens.lock();
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, expiry)| *expiry > now);
        }
        tokens.insert(token.clone(), (user.to_string(), expires));
        token
    }

    /// Forgets `token` (a logout): later calls carrying it are refused.
    pub fn revoke(&self, token: &str) {
        self.tokens.lock().remove(token);
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        // Compare against every entry so timing does not reveal which users exist.
        let plain = self.users.iter().fold(false, |found, entry| {
            let user_ok = constant_time_eq(entry.user.as_bytes(), user.as_bytes());
            let password_ok = constant_time_eq(entry.password.as_bytes(), password.as_bytes());
            found | (user_ok & password_ok)
        });
        let hashed = self
            .hashed_users
            .iter()
            .any(|entry| entry.user == user && entry.verify(password));
        plain | hashed
    }

    fn check_token(&self, token: &str) -> Option<String> {
        let mut tokens = self.tokens.lock();
        match tokens.get(token) {
            Some((user, expiry)) if *expiry > Instant::now() => Some(user.clone()),
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// A login with a user name and password (the web UI's form), from `client`: a new
    /// token for the user, or why it is refused. Throttled like handshakes.
    pub fn log_in(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<String, Status> {
        self.check_not_throttled(client)?;
        let accepted = self.check_password(user, password);
        self.record_login(client, accepted);
        match accepted {
            true => Ok(self.issue_token(user)),
            false => Err(Status::unauthenticated("invalid user name or password")),
        }
    }

    /// Who sent `authorization` from `client`, or why the call is refused. A client
    /// whose logins failed too often lately is refused without a check.
    pub fn authenticate_from(
        &self,
        authorization: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Option<String>, Status> {
        let is_login = authorization.is_some_and(|h| strip_scheme(h, "Basic").is_some());
        if !is_login {
            return self.authenticate(authorization);
        }
        self.check_not_throttled(client)?;
        let outcome = self.authenticate(authorization);
        if self.required() {
            self.record_login(client, outcome.is_ok());
        }
        outcome
    }

    /// Who sent `authorization`, or why the call is refused.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<String>, Status> {
        if !self.required() {
            return Ok(None);
        }
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(
                "this Quiver server requires a user name and password \
                 (log in with the Flight handshake using basic auth, then send the bearer token)",
            ));
        };
        if let Some(token) = strip_scheme(header, "Bearer") {
            return self.check_token(token).map(Some).ok_or_else(|| {
                Status::unauthenticated("the bearer token is unknown or expired; log in again")
            });
        }
        if let Some(encoded) = strip_scheme(header, "Basic") {
            let decoded = LENIENT_BASE64
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| Status::unauthenticated("malformed basic auth header"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| Status::unauthenticated("malformed basic auth header"))?;
            return if self.check_password(user, password) {
                Ok(Some(user.to_string()))
            } else {
                Err(Status::unauthenticated("invalid user name or password"))
            };
        }
        Err(Status::unauthenticated(
            "unsupported authorization scheme: use Basic (handshake) or Bearer",
        ))
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Interceptor for the Flight SQL service: refuses calls without valid credentials and
/// records who made the others.
/// Logins (user name and password, not bearer tokens) go to the audit log, if one is kept.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub auth: Arc<Authenticator>,
    pub audit: Option<Arc<AuditLog>>,
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let login = header.and_then(basic_user);
        let client = request.remote_addr();
        let outcome = self.auth.authenticate_from(header, client.map(|c| c.ip()));
        if let (Some(audit), Some(user)) = (&self.audit, &login)
            && self.auth.required()
        {
            audit.login(user, client, outcome.is_ok());
        }
        if let Some(user) = outcome? {
            request.extensions_mut().insert(AuthenticatedUser(user));
        }
        Ok(request)
    }
}

/// The user name of a basic-auth header (a login attempt), without its password.
fn basic_user(header: &str) -> Option<String> {
    let encoded = strip_scheme(header, "Basic")?;
    let decoded = String::from_utf8(LENIENT_BASE64.decode(encoded).ok()?).ok()?;
    Some(
        decoded
            .split_once(':')
            .map_or(decoded.clone(), |(user, _)| user.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Arc<Authenticator> {
        Authenticator::new(
            vec!["alice:secret".parse().unwrap()],
            vec![HashedUser::new("bob", "hashed").unwrap()],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn users_file_hashes_log_in_and_repeated_failures_are_refused_for_a_while() {
        let auth = authenticator();
        let client = Some(IpAddr::from([10, 0, 0, 7]));
        assert_eq!(
            auth.authenticate_from(Some(&basic("bob", "hashed")), client)
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(
                auth.authenticate_from(Some(&basic("bob", "guess")), client)
                    .is_err()
            );
        }
        let refused = auth
            .authenticate_from(Some(&basic("bob", "hashed")), client)
            .unwrap_err();
        assert!(
            refused.message().contains("too many failed logins"),
            "{refused:?}"
        );
        // Another address is not held back.
        let elsewhere = Some(IpAddr::from([10, 0, 0, 8]));
        assert!(
            auth.authenticate_from(Some(&basic("bob", "hashed")), elsewhere)
                .is_ok()
        );
    }

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn basic_auth_and_tokens() {
        let auth = authenticator();
        assert_eq!(
            auth.authenticate(Some(&basic("alice", "secret"))).unwrap(),
            Some("alice".to_string())
        );
        let wrong = auth
            .authenticate(Some(&basic("alice", "nope")))
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let token = auth.issue_token("alice");
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}"))).unwrap(),
            Some("alice".to_string())
        );
        assert!(auth.authenticate(Some("Bearer made-up")).is_err());
        assert!(auth.authenticate(None).is_err());
    }

    #[test]
    fn unpadded_basic_auth_is_accepted() {
        let auth = authenticator();
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:secret");
        assert_eq!(
            auth.authenticate(Some(&format!("Basic {unpadded}")))
                .unwrap(),
            Some("alice".to_string())
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Authenticator::new(vec!["a:b".parse().unwrap()], Vec::new(), Duration::ZERO);
        let token = auth.issue_token("a");
        assert!(auth.authenticate(Some(&format!("Bearer {token}"))).is_err());
    }

    #[test]
    fn open_server_needs_nothing() {
        let auth = Authenticator::new(Vec::new(), Vec::new(), Duration::from_secs(1));
        assert_eq!(auth.authenticate(None).unwrap(), None);
    }
}
