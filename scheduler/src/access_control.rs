//! Who may do what: roles, their members, table and schema privileges, location grants
//! and table owners, kept in memory and persisted in the catalog store.
//!
//! Access control applies to users who logged in and are not administrators, on a
//! server that names administrators (`--admin`). Callers without a login (a server
//! without users, the embedded API), administrators, and every login of a server that
//! names no administrator (a single user's or a trusted team's cluster) may do
//! everything. A table's or view's creator owns it: owners hold every privilege on it,
//! may grant them, and alone (with administrators) may drop or replace it. Roles, schema
//! grants and location grants are administrators' business.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use parking_lot::RwLock;
use quiver_core::{QuiverError, Result};

use crate::access_sql::{AccessStatement, GrantTarget, Grantee, Limit, Privilege};
use crate::admission::UserLimits;
use crate::catalog_store::{AccessRuleRow, CatalogStore};
use crate::locations::location_url;
use crate::query_history::SessionIdentity;

/// What a table privilege is held on, fully qualified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Securable {
    /// `catalog.schema.table`.
    Table(String),
    /// `catalog.schema`.
    Schema(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TableGrant {
    on: Securable,
    privilege: Privilege,
    grantee: Grantee,
}

/// Every rule, as one value: changes are made to a copy, persisted, then swapped in.
#[derive(Debug, Clone, Default)]
struct Rules {
    roles: BTreeSet<String>,
    /// (role, user).
    members: BTreeSet<(String, String)>,
    grants: BTreeSet<TableGrant>,
    /// (normalised prefix, grantee).
    locations: BTreeSet<(String, Grantee)>,
    /// Limits set for a user or a role (0: none).
    limits: BTreeMap<(Grantee, Limit), u64>,
}

/// The access-control state of the scheduler, shared by every session.
#[derive(Debug)]
pub struct AccessControl {
    rules: RwLock<Rules>,
    /// Owners of tables and views, by qualified name. Persisted with the tables' own
    /// catalog entries.
    owners: RwLock<HashMap<String, String>>,
    store: Option<Arc<dyn CatalogStore>>,
    /// Logins that hold every privilege.
    admins: Vec<String>,
}

/// A restricted caller: a logged-in user who is not an administrator.
#[derive(Debug, Clone, Copy)]
pub struct Restricted<'a> {
    pub user: &'a str,
}

impl<'a> Restricted<'a> {
    /// The restricted caller of `identity`, if it is one.
    pub fn of(identity: Option<&'a SessionIdentity>) -> Option<Self> {
        let identity = identity?;
        match &identity.user {
            Some(user) if identity.restricted => Some(Self { user }),
            _ => None,
        }
    }
}

impl AccessControl {
    /// The rules saved in `store`, if the scheduler has one.
    pub fn load(store: Option<Arc<dyn CatalogStore>>) -> Result<Self> {
        let mut rules = Rules::default();
        let mut owners = HashMap::new();
        if let Some(store) = &store {
            for row in store.access_rules()? {
                rules.add_row(&row)?;
            }
            owners = store
                .entries()?
                .into_iter()
                .filter_map(|entry| Some((entry.name, entry.owner?)))
                .collect();
        }
        Ok(Self {
            rules: RwLock::new(rules),
            owners: RwLock::new(owners),
            store,
            admins: Vec::new(),
        })
    }

    /// With `admins` holding every privilege.
    pub fn with_admins(mut self, admins: Vec<String>) -> Self {
        self.admins = admins;
        self
    }

    /// Whether `user` is an administrator.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|admin| admin == user)
    }

    /// Records that `user` created table or view `name`.
    pub fn set_owner(&self, name: &str, user: Option<&str>) {
        let mut owners = self.owners.write();
        match user {
            Some(user) => owners.insert(name.to_string(), user.to_string()),
            None => owners.remove(name),
        };
    }

    pub fn owner_of(&self, name: &str) -> Option<String> {
        self.owners.read().get(name).cloned()
    }

    /// Forgets the owner of, and every grant on, the dropped table, view or schema
    /// `name`, so that a later object of that name starts with none.
    pub fn forget(&self, name: &str) -> Result<()> {
        let inside = format!("{name}.");
        self.owners
            .write()
            .retain(|table, _| table != name && !table.starts_with(&inside));
        self.change(|rules| {
            rules.grants.retain(|grant| match &grant.on {
                Securable::Table(table) => table != name && !table.starts_with(&inside),
                Securable::Schema(schema) => schema != name,
            });
            Ok(())
        })
    }

    /// Whether `caller` holds `privilege` on table `name` (`catalog.schema.table`).
    pub fn holds(&self, caller: Restricted<'_>, privilege: Privilege, name: &str) -> bool {
        if self.owners.read().get(name).map(String::as_str) == Some(caller.user) {
            return true;
        }
        let schema = name
            .rsplit_once('.')
            .map(|(schema, _)| schema)
            .unwrap_or("");
        let rules = self.rules.read();
        rules.grants.iter().any(|grant| {
            grant.privilege == privilege
                && match &grant.on {
                    Securable::Table(table) => table == name,
                    Securable::Schema(granted) => granted == schema,
                }
                && rules.reaches(&grant.grantee, caller.user)
        })
    }

    /// Whether `caller` may see table `name` at all: it holds some privilege on it.
    pub fn sees(&self, caller: Restricted<'_>, name: &str) -> bool {
        self.holds(caller, Privilege::Select, name) || self.holds(caller, Privilege::Insert, name)
    }

    /// Whether `caller` may create tables on, or write to, `location`.
    pub fn may_use_location(&self, caller: Restricted<'_>, location: &str) -> bool {
        let Ok(location) = normalised_location(location) else {
            return false;
        };
        let rules = self.rules.read();
        rules.locations.iter().any(|(prefix, grantee)| {
            rules.reaches(grantee, caller.user)
                && (location.starts_with(prefix.as_str())
                    || prefix.strip_suffix('/') == Some(location.as_str()))
        })
    }

    /// The limits `user`'s statements run under: those set for the user; else the most
    /// generous of those set for the user's roles (0, no limit, is the most generous);
    /// else `defaults`, the server's.
    pub fn limits_for(&self, user: Option<&str>, defaults: UserLimits) -> UserLimits {
        let Some(user) = user else {
            return defaults;
        };
        let rules = self.rules.read();
        let value = |limit: Limit, default: u64| -> u64 {
            if let Some(value) = rules.limits.get(&(Grantee::User(user.to_string()), limit)) {
                return *value;
            }
            rules
                .limits
                .iter()
                .filter(|((grantee, set), _)| {
                    *set == limit
                        && matches!(grantee, Grantee::Role(_))
                        && rules.reaches(grantee, user)
                })
                .map(|(_, value)| *value)
                .max_by_key(|value| if *value == 0 { u64::MAX } else { *value })
                .unwrap_or(default)
        };
        UserLimits {
            max_running: value(Limit::MaxRunningStatements, defaults.max_running),
            max_queued: value(Limit::MaxQueuedStatements, defaults.max_queued),
            statement_timeout_secs: value(
                Limit::StatementTimeoutSecs,
                defaults.statement_timeout_secs,
            ),
            max_query_memory_bytes: value(
                Limit::MaxQueryMemoryBytes,
                defaults.max_query_memory_bytes,
            ),
        }
    }

    /// Carries out an access-control statement of `identity`'s session, whose defaults
    /// resolve the names in it.
    pub fn apply(
        &self,
        statement: &AccessStatement,
        identity: Option<&SessionIdentity>,
        context: &SessionContext,
    ) -> Result<()> {
        let caller = Restricted::of(identity);
        let administrators_only = |what: &str| match caller {
            Some(caller) => Err(QuiverError::PermissionDenied(format!(
                "{what} is for administrators; user {} is not one",
                caller.user
            ))),
            None => Ok(()),
        };
        match statement {
            AccessStatement::CreateRole {
                name,
                if_not_exists,
            } => {
                administrators_only("CREATE ROLE")?;
                self.change(|rules| {
                    if !rules.roles.insert(name.clone()) && !if_not_exists {
                        return Err(invalid(format!("role {name} already exists")));
                    }
                    Ok(())
                })
            }
            AccessStatement::DropRole { name, if_exists } => {
                administrators_only("DROP ROLE")?;
                self.change(|rules| {
                    if !rules.roles.remove(name) {
                        return match if_exists {
                            true => Ok(()),
                            false => Err(no_role(name)),
                        };
                    }
                    let role = Grantee::Role(name.clone());
                    rules.members.retain(|(member_of, _)| member_of != name);
                    rules.grants.retain(|grant| grant.grantee != role);
                    rules.locations.retain(|(_, grantee)| *grantee != role);
                    rules.limits.retain(|(grantee, _), _| *grantee != role);
                    Ok(())
                })
            }
            AccessStatement::Membership {
                revoke,
                role,
                users,
            } => {
                administrators_only("GRANT ROLE")?;
                self.change(|rules| {
                    if !rules.roles.contains(role) {
                        return Err(no_role(role));
                    }
                    for user in users {
                        let member = (role.clone(), user.clone());
                        match revoke {
                            false => rules.members.insert(member),
                            true => rules.members.remove(&member),
                        };
                    }
                    Ok(())
                })
            }
            AccessStatement::Location {
                revoke,
                prefix,
                grantees,
            } => {
                administrators_only("GRANT LOCATION")?;
                let prefix = normalised_prefix(prefix)?;
                self.change(|rules| {
                    rules.check_grantees(grantees)?;
                    for grantee in grantees {
                        let grant = (prefix.clone(), grantee.clone());
                        match revoke {
                            false => rules.locations.insert(grant),
                            true => rules.locations.remove(&grant),
                        };
                    }
                    Ok(())
                })
            }
            AccessStatement::SetLimit { of, limit, value } => {
                administrators_only("ALTER ROLE / ALTER USER")?;
                self.change(|rules| {
                    rules.check_grantees(std::slice::from_ref(of))?;
                    let key = (of.clone(), *limit);
                    match value {
                        Some(value) => rules.limits.insert(key, *value),
                        None => rules.limits.remove(&key),
                    };
                    Ok(())
                })
            }
            AccessStatement::Privileges {
                revoke,
                privileges,
                on,
                grantees,
            } => {
                let on = self.securable(on, caller, context)?;
                self.change(|rules| {
                    rules.check_grantees(grantees)?;
                    for privilege in privileges {
                        for grantee in grantees {
                            let grant = TableGrant {
                                on: on.clone(),
                                privilege: *privilege,
                                grantee: grantee.clone(),
                            };
                            match revoke {
                                false => rules.grants.insert(grant),
                                true => rules.grants.remove(&grant),
                            };
                        }
                    }
                    Ok(())
                })
            }
        }
    }

    /// What a `GRANT ... ON` names, checked to exist and to be `caller`'s to grant.
    fn securable(
        &self,
        target: &GrantTarget,
        caller: Option<Restricted<'_>>,
        context: &SessionContext,
    ) -> Result<Securable> {
        let state = context.state();
        let defaults = &state.config().options().catalog;
        match target {
            GrantTarget::Table(reference) => {
                let resolved = reference
                    .clone()
                    .resolve(&defaults.default_catalog, &defaults.default_schema);
                let name = resolved.to_string();
                if !context.table_exist(reference.clone()).unwrap_or(false) {
                    return Err(QuiverError::NotFound(
                        datafusion::error::DataFusionError::Plan(format!(
                            "table '{name}' not found"
                        )),
                    ));
                }
                if let Some(caller) = caller
                    && self.owner_of(&name).as_deref() != Some(caller.user)
                {
                    return Err(QuiverError::PermissionDenied(format!(
                        "only the owner of {name} or an administrator may grant privileges \
                         on it; user {} is neither",
                        caller.user
                    )));
                }
                Ok(Securable::Table(name))
            }
            GrantTarget::Schema(parts) => {
                if let Some(caller) = caller {
                    return Err(QuiverError::PermissionDenied(format!(
                        "privileges on a whole schema are granted by administrators; user {} \
                         is not one",
                        caller.user
                    )));
                }
                let (catalog, schema) = match parts.as_slice() {
                    [schema] => (defaults.default_catalog.clone(), schema.clone()),
                    [catalog, schema] => (catalog.clone(), schema.clone()),
                    _ => return Err(invalid(format!("'{}' is not a schema", parts.join(".")))),
                };
                let exists = context
                    .catalog(&catalog)
                    .is_some_and(|found| found.schema(&schema).is_some());
                if !exists {
                    return Err(QuiverError::NotFound(
                        datafusion::error::DataFusionError::Plan(format!(
                            "schema '{catalog}.{schema}' not found"
                        )),
                    ));
                }
                Ok(Securable::Schema(format!("{catalog}.{schema}")))
            }
        }
    }

    /// Changes a copy of the rules, saves it, then makes it the rules in force.
    fn change(&self, edit: impl FnOnce(&mut Rules) -> Result<()>) -> Result<()> {
        let mut rules = self.rules.write();
        let mut changed = rules.clone();
        edit(&mut changed)?;
        if let Some(store) = &self.store {
            store.replace_access_rules(&changed.rows())?;
        }
        *rules = changed;
        Ok(())
    }
}

impl Rules {
    /// Whether a grant to `grantee` reaches `user`.
    fn reaches(&self, grantee: &Grantee, user: &str) -> bool {
        match grantee {
            Grantee::Public => true,
            Grantee::User(name) => name == user,
            Grantee::Role(role) => self.members.contains(&(role.clone(), user.to_string())),
        }
    }

    fn check_grantees(&self, grantees: &[Grantee]) -> Result<()> {
        for grantee in grantees {
            if let Grantee::Role(role) = grantee
                && !self.roles.contains(role)
            {
                return Err(no_role(role));
            }
        }
        Ok(())
    }

    fn rows(&self) -> Vec<AccessRuleRow> {
        let row = |kind: &str, object: &str, privilege: &str, grantee: String| AccessRuleRow {
            kind: kind.to_string(),
            object: object.to_string(),
            privilege: privilege.to_string(),
            grantee,
        };
        let mut rows: Vec<AccessRuleRow> = self
            .roles
            .iter()
            .map(|role| row("role", role, "", String::new()))
            .collect();
        rows.extend(
            self.members
                .iter()
                .map(|(role, user)| row("member", role, "", format!("user:{user}"))),
        );
        rows.extend(self.grants.iter().map(|grant| {
            let (kind, object) = match &grant.on {
                Securable::Table(name) => ("table", name),
                Securable::Schema(name) => ("schema", name),
            };
            row(
                kind,
                object,
                grant.privilege.as_str(),
                encode_grantee(&grant.grantee),
            )
        }));
        rows.extend(
            self.locations
                .iter()
                .map(|(prefix, grantee)| row("location", prefix, "", encode_grantee(grantee))),
        );
        // A limit: whose (object), which (privilege), how much (grantee).
        rows.extend(self.limits.iter().map(|((of, limit), value)| {
            row(
                "limit",
                &encode_grantee(of),
                limit.as_str(),
                value.to_string(),
            )
        }));
        rows
    }

    fn add_row(&mut self, row: &AccessRuleRow) -> Result<()> {
        let bad = || QuiverError::Config(format!("catalog store: unreadable access rule {row:?}"));
        let grantee = || decode_grantee(&row.grantee).ok_or_else(bad);
        match row.kind.as_str() {
            "role" => {
                self.roles.insert(row.object.clone());
            }
            "member" => {
                let Grantee::User(user) = grantee()? else {
                    return Err(bad());
                };
                self.members.insert((row.object.clone(), user));
            }
            "table" | "schema" => {
                let on = match row.kind.as_str() {
                    "table" => Securable::Table(row.object.clone()),
                    _ => Securable::Schema(row.object.clone()),
                };
                self.grants.insert(TableGrant {
                    on,
                    privilege: Privilege::parse(&row.privilege).ok_or_else(bad)?,
                    grantee: grantee()?,
                });
            }
            "location" => {
                self.locations.insert((row.object.clone(), grantee()?));
            }
            "limit" => {
                let of = decode_grantee(&row.object).ok_or_else(bad)?;
                let limit = Limit::parse(&row.privilege).ok_or_else(bad)?;
                let value = row.grantee.parse().map_err(|_| bad())?;
                self.limits.insert((of, limit), value);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

fn encode_grantee(grantee: &Grantee) -> String {
    match grantee {
        Grantee::User(name) => format!("user:{name}"),
        Grantee::Role(name) => format!("role:{name}"),
        Grantee::Public => "public".to_string(),
    }
}

fn decode_grantee(text: &str) -> Option<Grantee> {
    match text.split_once(':') {
        Some(("user", name)) => Some(Grantee::User(name.to_string())),
        Some(("role", name)) => Some(Grantee::Role(name.to_string())),
        None if text == "public" => Some(Grantee::Public),
        _ => None,
    }
}

/// A location as the URL text prefixes are compared with: local paths absolute, `.` and
/// `..` resolved.
fn normalised_location(location: &str) -> Result<String> {
    let url = location_url(location).map_err(|e| invalid(format!("location '{location}': {e}")))?;
    // Parsing the text again resolves `..` segments that a path carried into the URL.
    let url = url::Url::parse(url.as_str())
        .map_err(|e| invalid(format!("location '{location}': {e}")))?;
    Ok(url.to_string())
}

/// A granted prefix, normalised and ending in `/` so that `/data/team` does not also
/// grant `/data/team-other`.
fn normalised_prefix(prefix: &str) -> Result<String> {
    let mut normalised = normalised_location(prefix)?;
    if !normalised.ends_with('/') {
        normalised.push('/');
    }
    Ok(normalised)
}

fn invalid(message: String) -> QuiverError {
    QuiverError::InvalidQuery(datafusion::error::DataFusionError::Plan(message))
}

fn no_role(name: &str) -> QuiverError {
    QuiverError::NotFound(datafusion::error::DataFusionError::Plan(format!(
        "role '{name}' does not exist"
    )))
}

/// `name` resolved against `context`'s default catalog and schema, as owners and grants
/// key tables.
pub fn qualified_name(name: &TableReference, context: &SessionContext) -> String {
    let state = context.state();
    let defaults = &state.config().options().catalog;
    name.clone()
        .resolve(&defaults.default_catalog, &defaults.default_schema)
        .to_string()
}

/// A schema name (`s` or `catalog.s`) with `context`'s default catalog filled in.
pub fn qualified_schema(name: &str, context: &SessionContext) -> String {
    if name.contains('.') {
        return name.to_string();
    }
    let state = context.state();
    format!(
        "{}.{name}",
        state.config().options().catalog.default_catalog
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_sql::parse;

    fn admin() -> SessionIdentity {
        SessionIdentity {
            user: Some("root".into()),
            session: "s".into(),
            admin: true,
            restricted: false,
        }
    }

    fn apply(access: &AccessControl, sql: &str, context: &SessionContext) -> Result<()> {
        access.apply(&parse(sql).unwrap().unwrap(), Some(&admin()), context)
    }

    #[tokio::test]
    async fn grants_reach_users_directly_through_roles_and_schemas_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CatalogStore> = Arc::new(
            crate::catalog_store::SqliteCatalogStore::open(&dir.path().join("c.sqlite")).unwrap(),
        );
        let context = SessionContext::new();
        context.sql("CREATE TABLE t (a INT)").await.unwrap();
        context.sql("CREATE SCHEMA s").await.unwrap();
        let access = AccessControl::load(Some(Arc::clone(&store))).unwrap();
        let bob = Restricted { user: "bob" };
        let carol = Restricted { user: "carol" };
        let t = "datafusion.public.t";
        assert!(!access.sees(bob, t));
        apply(&access, "GRANT SELECT ON t TO bob", &context).unwrap();
        apply(&access, "CREATE ROLE writers", &context).unwrap();
        apply(
            &access,
            "GRANT INSERT ON SCHEMA public TO ROLE writers",
            &context,
        )
        .unwrap();
        apply(&access, "GRANT ROLE writers TO carol", &context).unwrap();
        apply(
            &access,
            "GRANT LOCATION '/data/team' TO ROLE writers",
            &context,
        )
        .unwrap();
        let reloaded = AccessControl::load(Some(store)).unwrap();
        for access in [&access, &reloaded] {
            assert!(access.holds(bob, Privilege::Select, t));
            assert!(!access.holds(bob, Privilege::Insert, t));
            assert!(access.holds(carol, Privilege::Insert, t));
            assert!(!access.holds(carol, Privilege::Select, t));
            assert!(access.may_use_location(carol, "/data/team/x.parquet"));
            assert!(access.may_use_location(carol, "/data/team"));
            assert!(!access.may_use_location(carol, "/data/team-other/x"));
            assert!(!access.may_use_location(carol, "/data/team/../secret/x"));
            assert!(!access.may_use_location(bob, "/data/team/x"));
        }
        apply(
            &access,
            "ALTER ROLE writers SET max_running_statements = 2",
            &context,
        )
        .unwrap();
        apply(&access, "CREATE ROLE unlimited", &context).unwrap();
        apply(
            &access,
            "ALTER ROLE unlimited SET max_running_statements = 0",
            &context,
        )
        .unwrap();
        apply(
            &access,
            "ALTER USER bob SET statement_timeout_secs = 30",
            &context,
        )
        .unwrap();
        let defaults = UserLimits {
            max_running: 4,
            statement_timeout_secs: 60,
            ..UserLimits::default()
        };
        let reloaded = AccessControl::load(access.store.clone()).unwrap();
        for access in [&access, &reloaded] {
            let carol_limits = access.limits_for(Some("carol"), defaults);
            assert_eq!(carol_limits.max_running, 2);
            assert_eq!(carol_limits.statement_timeout_secs, 60);
            let bob_limits = access.limits_for(Some("bob"), defaults);
            assert_eq!(
                (bob_limits.max_running, bob_limits.statement_timeout_secs),
                (4, 30)
            );
        }
        apply(&access, "GRANT ROLE unlimited TO carol", &context).unwrap();
        assert_eq!(access.limits_for(Some("carol"), defaults).max_running, 0);
        apply(&access, "DROP ROLE writers", &context).unwrap();
        assert!(!access.holds(carol, Privilege::Insert, t));
        assert!(!access.may_use_location(carol, "/data/team/x"));
        access.forget(t).unwrap();
        assert!(!access.sees(bob, t));
    }

    #[tokio::test]
    async fn users_who_are_not_administrators_grant_only_what_they_own() {
        let context = SessionContext::new();
        context.sql("CREATE TABLE t (a INT)").await.unwrap();
        let access = AccessControl::load(None).unwrap();
        let bob = SessionIdentity {
            user: Some("bob".into()),
            session: "s".into(),
            admin: false,
            restricted: true,
        };
        let grant = parse("GRANT SELECT ON t TO carol").unwrap().unwrap();
        let refused = access.apply(&grant, Some(&bob), &context).unwrap_err();
        assert!(
            matches!(refused, QuiverError::PermissionDenied(_)),
            "{refused}"
        );
        access.set_owner("datafusion.public.t", Some("bob"));
        access.apply(&grant, Some(&bob), &context).unwrap();
        let role = parse("CREATE ROLE r").unwrap().unwrap();
        assert!(access.apply(&role, Some(&bob), &context).is_err());
        let missing = parse("GRANT SELECT ON nothing TO carol").unwrap().unwrap();
        let missing = access.apply(&missing, Some(&bob), &context).unwrap_err();
        assert!(matches!(missing, QuiverError::NotFound(_)), "{missing}");
    }
}
