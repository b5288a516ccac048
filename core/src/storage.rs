//! Where table data lives: object stores (S3, GCS, Azure, HTTP) beside the local file
//! system, built from a process's standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`)
//! and a table's storage options (`'aws.region'`, `'aws.access_key_id'`, ...).
//!
//! The scheduler and every executor hold a [`StoreRegistry`]: it builds a store the first
//! time a location names its bucket, and rebuilds it when a table brings options for it.
//! Storage options are secrets: they are kept apart from a table's format options, never
//! displayed, and travel to executors only inside task definitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use parking_lot::Mutex;
use url::Url;

use crate::QuiverError;

/// Prefixes of table options that configure storage rather than the file format.
const STORAGE_OPTION_PREFIXES: [&str; 5] = ["aws.", "gcp.", "google.", "azure.", "http."];

/// Storage options of one table, keyed as written (`aws.region`). Secret: its `Debug`
/// shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl StorageOptions {
    pub fn new(options: BTreeMap<String, String>) -> Self {
        Self(options)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Takes the storage options out of a table's `OPTIONS (...)`, leaving the format's.
    pub fn split_from(options: &mut HashMap<String, String>) -> Self {
        let keys: Vec<String> = options
            .keys()
            .filter(|key| is_storage_option(key))
            .cloned()
            .collect();
        Self(
            keys.into_iter()
                .filter_map(|key| options.remove_entry(&key))
                .collect(),
        )
    }
}

/// Whether a table option configures storage (and is therefore secret).
pub fn is_storage_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    STORAGE_OPTION_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// The part of a location that names its store: `s3://bucket`, `file://`.
pub fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

/// Object stores by bucket, built on first use from the environment and rebuilt with a
/// table's storage options when it brings some. Local paths use the local file system.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    local: DefaultObjectStoreRegistry,
    /// Stores built here by store key, with the options they were built with.
    built: Mutex<HashMap<String, BuiltStore>>,
}

/// A store and the options it was built with.
#[derive(Debug, Clone)]
struct BuiltStore {
    options: StorageOptions,
    store: Arc<dyn ObjectStore>,
}

impl StoreRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the store for `location` use `options` (with the environment for the rest),
    /// unless it already does.
    pub fn configure(&self, location: &Url, options: &StorageOptions) -> DfResult<()> {
        if !is_remote(location) {
            return Ok(());
        }
        let key = store_key(location);
        if self
            .built
            .lock()
            .get(&key)
            .is_some_and(|built| &built.options == options)
        {
            return Ok(());
        }
        let store = build_store(location, options)?;
        let options = options.clone();
        self.built.lock().insert(key, BuiltStore { options, store });
        Ok(())
    }

    /// The options the store for `location` was built with (empty for local paths and
    /// stores configured by the environment alone).
    pub fn options_for(&self, location: &Url) -> StorageOptions {
        self.built
            .lock()
            .get(&store_key(location))
            .map(|built| built.options.clone())
            .unwrap_or_default()
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        if !is_remote(url) {
            return self.local.register_store(url, store);
        }
        let options = StorageOptions::default();
        self.built
            .lock()
            .insert(store_key(url), BuiltStore { options, store })
            .map(|previous| previous.store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if !is_remote(url) {
            return self.local.deregister_store(url);
        }
        self.built
            .lock()
            .remove(&store_key(url))
            .map(|built| built.store)
            .ok_or_else(|| {
                DataFusionError::Execution(format!("no object store for {}", store_key(url)))
            })
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if !is_remote(url) {
            return self.local.get_store(url);
        }
        let key = store_key(url);
        if let Some(built) = self.built.lock().get(&key) {
            return Ok(Arc::clone(&built.store));
        }
        let store = build_store(url, &StorageOptions::default())?;
        let mut built = self.built.lock();
        let entry = built.entry(key).or_insert_with(|| BuiltStore {
            options: StorageOptions::default(),
            store,
        });
        Ok(Arc::clone(&entry.store))
    }
}

fn is_remote(url: &Url) -> bool {
    matches!(
        url.scheme(),
        "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "http" | "https"
    )
}

/// Requests to a store give up within seconds, not the minutes of the default retry
/// policy: an unreachable endpoint must become a clear error, not a hang.
fn bounded_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60))
}

/// Builds the store `location` names, from the environment overlaid with `options`.
fn build_store(location: &Url, options: &StorageOptions) -> DfResult<Arc<dyn ObjectStore>> {
    let bucket = location.host_str().unwrap_or_default().to_string();
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match location.scheme() {
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .with_retry(bounded_retries())
                .with_client_options(client_options());
            for (key, value) in option_keys(options, &["aws."], location)? {
                builder = builder.with_config(parse_key::<AmazonS3ConfigKey>(&key)?, value);
            }
            builder.build().map(|store| Arc::new(store) as _)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&bucket)
                .with_retry(bounded_retries())
                .with_client_options(client_options());
            for (key, value) in option_keys(options, &["gcp.", "google."], location)? {
                builder = builder.with_config(parse_key::<GoogleConfigKey>(&key)?, value);
            }
            builder.build().map(|store| Arc::new(store) as _)
        }
        "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(location.as_str())
                .with_retry(bounded_retries())
                .with_client_options(client_options());
            for (key, value) in option_keys(options, &["azure."], location)? {
                builder = builder.with_config(parse_key::<AzureConfigKey>(&key)?, value);
            }
            builder.build().map(|store| Arc::new(store) as _)
        }
        _ => {
            let mut builder = HttpBuilder::new()
                .with_url(store_key(location))
                .with_retry(bounded_retries())
                .with_client_options(client_options());
            for (key, value) in option_keys(options, &["http."], location)? {
                builder = builder.with_config(parse_key::<ClientConfigKey>(&key)?, value);
            }
            builder.build().map(|store| Arc::new(store) as _)
        }
    };
    built.map_err(|error| {
        DataFusionError::External(Box::new(QuiverError::Config(format!(
            "cannot set up the object store for {}: {error}",
            store_key(location)
        ))))
    })
}

/// The options meant for this kind of store, with their prefix taken off; an option for
/// another kind is a mistake worth naming.
fn option_keys(
    options: &StorageOptions,
    prefixes: &[&str],
    location: &Url,
) -> DfResult<Vec<(String, String)>> {
    let mut keys = Vec::new();
    for (key, value) in options.entries() {
        let lower = key.to_ascii_lowercase();
        match prefixes
            .iter()
            .find_map(|prefix| lower.strip_prefix(prefix))
        {
            Some(rest) => keys.push((rest.to_string(), value.clone())),
            None => {
                return Err(DataFusionError::Plan(format!(
                    "option '{key}' does not apply to {} locations",
                    location.scheme()
                )));
            }
        }
    }
    Ok(keys)
}

fn parse_key<K: std::str::FromStr>(key: &str) -> DfResult<K> {
    key.parse()
        .map_err(|_| DataFusionError::Plan(format!("unknown storage option '{key}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> StorageOptions {
        StorageOptions::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn storage_options_are_split_from_format_options_and_never_shown() {
        let mut table_options: HashMap<String, String> = [
            ("aws.secret_access_key", "hunter2"),
            ("format.has_header", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let storage = StorageOptions::split_from(&mut table_options);
        assert_eq!(table_options.len(), 1);
        assert!(table_options.contains_key("format.has_header"));
        assert_eq!(storage.entries().len(), 1);
        assert!(!format!("{storage:?}").contains("hunter2"));
    }

    #[test]
    fn stores_are_built_per_bucket_and_rebuilt_for_new_options() {
        let registry = StoreRegistry::new();
        let bucket = Url::parse("s3://bucket-a/some/table/").unwrap();
        let with_region = options(&[("aws.region", "eu-west-1"), ("aws.allow_http", "true")]);
        registry.configure(&bucket, &with_region).unwrap();
        assert_eq!(registry.options_for(&bucket), with_region);
        let same_bucket = Url::parse("s3://bucket-a/other/").unwrap();
        assert_eq!(registry.options_for(&same_bucket), with_region);
        assert!(registry.get_store(&same_bucket).is_ok());
        let other = Url::parse("s3://bucket-b/").unwrap();
        assert!(registry.options_for(&other).is_empty());
        // Local paths are the local file system, whatever the options.
        let local = Url::parse("file:///tmp/").unwrap();
        assert!(registry.get_store(&local).is_ok());
    }

    #[test]
    fn options_for_another_kind_of_store_or_unknown_keys_are_refused() {
        let registry = StoreRegistry::new();
        let bucket = Url::parse("s3://bucket/").unwrap();
        let wrong_kind = options(&[("gcp.service_account_path", "/x")]);
        let error = registry.configure(&bucket, &wrong_kind).unwrap_err();
        assert!(
            error.to_string().contains("does not apply to s3"),
            "{error}"
        );
        let unknown = options(&[("aws.no_such_key", "x")]);
        let error = registry.configure(&bucket, &unknown).unwrap_err();
        assert!(error.to_string().contains("no_such_key"), "{error}");
    }
}
