//! The catalog as a restricted user sees it: tables and views on which the user holds no
//! privilege are absent. Planning then reports them as not found, and every metadata
//! path that lists the catalog (`information_schema`, Flight SQL `GetTables`, the
//! shell's `\d` and completion) leaves them out. Changes (`CREATE`, `DROP`) pass through
//! to the shared catalog.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;

use crate::access_control::{AccessControl, Restricted};

/// Schemas whose tables every user sees: their rows are filtered for the user already
/// (`system.queries`) or describe only what the user sees (`information_schema`).
pub(crate) const OPEN_SCHEMAS: [&str; 2] = ["information_schema", "system"];

/// Who is looking.
#[derive(Debug, Clone)]
struct Viewer {
    access: Arc<AccessControl>,
    user: String,
}

impl Viewer {
    fn sees(&self, catalog: &str, schema: &str, table: &str) -> bool {
        OPEN_SCHEMAS.contains(&schema)
            || self.access.sees(
                Restricted { user: &self.user },
                &format!("{catalog}.{schema}.{table}"),
            )
    }
}

/// `catalogs` as `user` sees them.
pub(crate) fn visible_to(
    catalogs: Arc<dyn CatalogProviderList>,
    access: Arc<AccessControl>,
    user: &str,
) -> Arc<dyn CatalogProviderList> {
    Arc::new(VisibleCatalogs {
        inner: catalogs,
        viewer: Viewer {
            access,
            user: user.to_string(),
        },
    })
}

#[derive(Debug)]
struct VisibleCatalogs {
    inner: Arc<dyn CatalogProviderList>,
    viewer: Viewer,
}

impl CatalogProviderList for VisibleCatalogs {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        Some(Arc::new(VisibleCatalog {
            name: name.to_string(),
            inner,
            viewer: self.viewer.clone(),
        }))
    }
}

#[derive(Debug)]
struct VisibleCatalog {
    name: String,
    inner: Arc<dyn CatalogProvider>,
    viewer: Viewer,
}

impl CatalogProvider for VisibleCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(VisibleSchema {
            catalog: self.name.clone(),
            name: name.to_string(),
            inner,
            viewer: self.viewer.clone(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

#[derive(Debug)]
struct VisibleSchema {
    catalog: String,
    name: String,
    inner: Arc<dyn SchemaProvider>,
    viewer: Viewer,
}

impl VisibleSchema {
    fn sees(&self, table: &str) -> bool {
        self.viewer.sees(&self.catalog, &self.name, table)
    }
}

#[async_trait]
impl SchemaProvider for VisibleSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner
            .table_names()
            .into_iter()
            .filter(|table| self.sees(table))
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !self.sees(name) {
            return Ok(None);
        }
        self.inner.table(name).await
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        if !self.sees(name) {
            return Ok(None);
        }
        self.inner.table_type(name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.sees(name) && self.inner.table_exist(name)
    }
}
