//! A seeded random SQL generator in the manner of sqlsmith: it walks a catalog (tables,
//! typed columns, which columns are unique) and writes type-correct queries with
//! expressions of a chosen depth, joins on matching key columns, subqueries, set
//! operations, grouping sets, window functions and casts of edge values.
//!
//! Every query's answer is deterministic: a `LIMIT` always follows an `ORDER BY` of every
//! output column, and order-sensitive functions (`row_number`, `string_agg`, `first_value`)
//! are not generated. Joins are bounded: an equi-join's right side is unique on its key, so
//! no join yields more rows than its left side; only tables of at most 100 rows cross join.

/// A column's type as the generator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Int,
    Float,
    Decimal,
    Text,
    Date,
    Bool,
}

impl SqlType {
    const VALUES: [SqlType; 5] = [
        SqlType::Int,
        SqlType::Float,
        SqlType::Decimal,
        SqlType::Text,
        SqlType::Date,
    ];

    fn sql_name(self) -> &'static str {
        match self {
            SqlType::Int => "BIGINT",
            SqlType::Float => "DOUBLE",
            SqlType::Decimal => "DECIMAL(15,2)",
            SqlType::Text => "VARCHAR",
            SqlType::Date => "DATE",
            SqlType::Bool => "BOOLEAN",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, SqlType::Int | SqlType::Float | SqlType::Decimal)
    }
}

/// One column of a catalog table.
#[derive(Debug, Clone)]
pub struct CatalogColumn {
    pub name: String,
    pub sql_type: SqlType,
    /// No two rows share a value: joining to this column cannot multiply rows.
    pub unique: bool,
}

/// One table of the catalog the generator walks.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    pub name: String,
    pub rows: usize,
    pub columns: Vec<CatalogColumn>,
}

/// SplitMix64: small, fast and good enough to pick SQL shapes; the same seed always gives
/// the same queries.
#[derive(Debug, Clone)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A column visible to an expression: its qualified name and type.
#[derive(Debug, Clone)]
struct Visible {
    reference: String,
    sql_type: SqlType,
}

/// The columns in scope of one query block.
#[derive(Debug, Clone, Default)]
struct Scope {
    columns: Vec<Visible>,
}

impl Scope {
    fn of_type(&self, sql_type: SqlType) -> Vec<&Visible> {
        self.columns
            .iter()
            .filter(|c| c.sql_type == sql_type)
            .collect()
    }
}

/// Writes random queries over a catalog; see the module documentation.
pub struct SqlGenerator {
    tables: Vec<CatalogTable>,
    random: Random,
    /// Deepest expression nesting the next query may use.
    max_depth: usize,
    /// Aliases handed out so far in the current query (t0, t1, ...).
    aliases: usize,
}

impl SqlGenerator {
    /// A generator over `tables` whose `index`-th query of a run with `seed` is always
    /// the same, whatever came before it: a failure replays from (seed, index) alone.
    pub fn new(tables: Vec<CatalogTable>, seed: u64, index: u64, max_depth: usize) -> Self {
        let mut mixer = Random(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
        let state = mixer.next();
        Self {
            tables,
            random: Random(state),
            max_depth: max_depth.max(1),
            aliases: 0,
        }
    }

    /// One query.
    pub fn query(&mut self) -> String {
        self.aliases = 0;
        match self.random.below(100) {
            0..=29 => self.plain_select(),
            30..=54 => self.aggregate_select(),
            55..=69 => self.window_select(),
            70..=84 => self.set_operation(),
            _ => self.derived_table_select(),
        }
    }

    fn alias(&mut self) -> String {
        let alias = format!("t{}", self.aliases);
        self.aliases += 1;
        alias
    }

    /// `FROM` with one table, an equi-join on a key, or a cross join of small tables.
    fn table_expression(&mut self) -> (String, Scope) {
        let left_index = self.random.below(self.tables.len());
        let left = self.tables[left_index].clone();
        let left_alias = self.alias();
        let mut scope = scope_of(&left, &left_alias);
        let mut from = format!("{} {left_alias}", left.name);
        if self.random.chance(45)
            && let Some((right, left_column, right_column)) = self.join_partner(&left)
        {
            let right_alias = self.alias();
            let kind = *self
                .random
                .pick(&["JOIN", "JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]);
            let right_scope = scope_of(&right, &right_alias);
            let mut on = format!("{left_alias}.{left_column} = {right_alias}.{right_column}");
            scope.columns.extend(right_scope.columns);
            if self.random.chance(25) {
                let extra = self.expression(&scope, SqlType::Bool, 1);
                on = format!("{on} AND {extra}");
            }
            from = format!("{from} {kind} {} {right_alias} ON {on}", right.name);
        } else if left.rows <= 100 && self.random.chance(20) {
            let small: Vec<CatalogTable> = self
                .tables
                .iter()
                .filter(|t| t.rows <= 100)
                .cloned()
                .collect();
            let right = self.random.pick(&small).clone();
            let right_alias = self.alias();
            scope.columns.extend(scope_of(&right, &right_alias).columns);
            from = format!("{from} CROSS JOIN {} {right_alias}", right.name);
        }
        (from, scope)
    }

    /// A table with a unique column whose name ends like one of `left`'s columns
    /// (`o_orderkey` for `l_orderkey`), and the two column names.
    fn join_partner(&mut self, left: &CatalogTable) -> Option<(CatalogTable, String, String)> {
        let mut candidates = Vec::new();
        for table in &self.tables {
            for right_column in table.columns.iter().filter(|c| c.unique) {
                for left_column in &left.columns {
                    if left_column.sql_type == right_column.sql_type
                        && key_suffix(&left_column.name) == key_suffix(&right_column.name)
                        && key_suffix(&left_column.name).ends_with("key")
                    {
                        candidates.push((
                            table.clone(),
                            left_column.name.clone(),
                            right_column.name.clone(),
                        ));
                    }
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        Some(self.random.pick(&candidates).clone())
    }

    fn where_clause(&mut self, scope: &Scope) -> String {
        if self.random.chance(70) {
            format!(
                " WHERE {}",
                self.expression(scope, SqlType::Bool, self.max_depth)
            )
        } else {
            String::new()
        }
    }

    /// `ORDER BY` every output column, then a `LIMIT`: a deterministic cut.
    fn ordered_limit(&mut self, columns: usize) -> String {
        let all: Vec<String> = (1..=columns)
            .map(|i| {
                let direction =
                    *self
                        .random
                        .pick(&["", " DESC", " NULLS FIRST", " DESC NULLS LAST"]);
                format!("{i}{direction}")
            })
            .collect();
        format!(
            " ORDER BY {} LIMIT {}",
            all.join(", "),
            self.random.pick(&[0, 1, 5, 20, 100])
        )
    }

    fn select_list(&mut self, scope: &Scope, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let sql_type = self.any_type();
                format!(
                    "{} AS c{i}",
                    self.expression(scope, sql_type, self.max_depth)
                )
            })
            .collect()
    }

    fn plain_select(&mut self) -> String {
        let (from, scope) = self.table_expression();
        let count = 1 + self.random.below(4);
        let items = self.select_list(&scope, count);
        let distinct = if self.random.chance(15) {
            "DISTINCT "
        } else {
            ""
        };
        let filter = self.where_clause(&scope);
        let tail = if self.random.chance(50) {
            self.ordered_limit(count)
        } else {
            String::new()
        };
        format!(
            "SELECT {distinct}{} FROM {from}{filter}{tail}",
            items.join(", ")
        )
    }

    fn aggregate_select(&mut self) -> String {
        let (from, scope) = self.table_expression();
        let keys: Vec<String> = (0..self.random.below(3))
            .map(|_| {
                let sql_type = self.any_type();
                self.expression(&scope, sql_type, 1)
            })
            .collect();
        let mut items: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| format!("{key} AS k{i}"))
            .collect();
        for i in 0..1 + self.random.below(3) {
            items.push(format!("{} AS a{i}", self.aggregate(&scope)));
        }
        let filter = self.where_clause(&scope);
        let group_by = if keys.is_empty() {
            String::new()
        } else {
            let positions: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
            match self.random.below(10) {
                0 if keys.len() >= 2 => format!(" GROUP BY ROLLUP ({})", keys.join(", ")),
                1 if keys.len() >= 2 => format!(" GROUP BY CUBE ({})", keys.join(", ")),
                2 => format!(" GROUP BY GROUPING SETS (({}), ())", keys.join(", ")),
                _ => format!(" GROUP BY {}", positions.join(", ")),
            }
        };
        let having = if !keys.is_empty() && self.random.chance(30) {
            let aggregate = self.aggregate(&scope);
            format!(
                " HAVING {aggregate} IS NOT NULL AND COUNT(*) > {}",
                self.random.below(3)
            )
        } else {
            String::new()
        };
        format!(
            "SELECT {} FROM {from}{filter}{group_by}{having}",
            items.join(", ")
        )
    }

    fn aggregate(&mut self, scope: &Scope) -> String {
        let depth = self.max_depth.min(3);
        match self.random.below(8) {
            0 => "COUNT(*)".to_string(),
            1 => {
                let sql_type = self.any_type();
                format!("COUNT({})", self.expression(scope, sql_type, depth))
            }
            2 => {
                let sql_type = self.any_type();
                format!(
                    "COUNT(DISTINCT {})",
                    self.expression(scope, sql_type, depth)
                )
            }
            3 | 4 => {
                let sql_type = *self
                    .random
                    .pick(&[SqlType::Int, SqlType::Decimal, SqlType::Float]);
                let function = *self.random.pick(&["SUM", "AVG"]);
                format!("{function}({})", self.expression(scope, sql_type, depth))
            }
            _ => {
                let sql_type = self.any_type();
                let function = *self.random.pick(&["MIN", "MAX"]);
                format!("{function}({})", self.expression(scope, sql_type, depth))
            }
        }
    }

    fn window_select(&mut self) -> String {
        let (from, scope) = self.table_expression();
        let count = 1 + self.random.below(2);
        let mut items = self.select_list(&scope, count);
        let partition_type = self.any_type();
        let partition = self.expression(&scope, partition_type, 1);
        let order_type = self.any_type();
        let order = self.expression(&scope, order_type, 1);
        let value_type = *self
            .random
            .pick(&[SqlType::Int, SqlType::Decimal, SqlType::Float]);
        let value = self.expression(&scope, value_type, 2);
        let window = match self.random.below(6) {
            0 => format!("SUM({value}) OVER (PARTITION BY {partition})"),
            1 => format!("COUNT(*) OVER (PARTITION BY {partition})"),
            2 => format!("RANK() OVER (PARTITION BY {partition} ORDER BY {order})"),
            3 => format!("DENSE_RANK() OVER (ORDER BY {order})"),
            4 => format!("MAX({value}) OVER (PARTITION BY {partition} ORDER BY {order})"),
            _ => format!("MIN({value}) OVER ()"),
        };
        items.push(format!("{window} AS w"));
        let filter = self.where_clause(&scope);
        let count = items.len();
        let tail = self.ordered_limit(count);
        format!("SELECT {} FROM {from}{filter}{tail}", items.join(", "))
    }

    /// Two selects with the same column types joined by a set operator.
    fn set_operation(&mut self) -> String {
        let types: Vec<SqlType> = (0..1 + self.random.below(3))
            .map(|_| self.any_type())
            .collect();
        let left = self.typed_select(&types);
        let right = self.typed_select(&types);
        let operator = *self.random.pick(&[
            "UNION",
            "UNION ALL",
            "INTERSECT",
            "EXCEPT",
            "INTERSECT ALL",
            "EXCEPT ALL",
        ]);
        format!("({left}) {operator} ({right})")
    }

    fn typed_select(&mut self, types: &[SqlType]) -> String {
        let (from, scope) = self.table_expression();
        let items: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, &sql_type)| {
                let expression = self.expression(&scope, sql_type, self.max_depth);
                format!("CAST({expression} AS {}) AS c{i}", sql_type.sql_name())
            })
            .collect();
        let filter = self.where_clause(&scope);
        format!("SELECT {} FROM {from}{filter}", items.join(", "))
    }

    /// An aggregate or plain select used as a table in another query's `FROM`.
    fn derived_table_select(&mut self) -> String {
        let types: Vec<SqlType> = (0..1 + self.random.below(3))
            .map(|_| self.any_type())
            .collect();
        let inner = self.typed_select(&types);
        let alias = self.alias();
        let scope = Scope {
            columns: types
                .iter()
                .enumerate()
                .map(|(i, &sql_type)| Visible {
                    reference: format!("{alias}.c{i}"),
                    sql_type,
                })
                .collect(),
        };
        let key = self.expression(&scope, types[0], 1);
        let aggregate = self.aggregate(&scope);
        let filter = self.where_clause(&scope);
        if self.random.chance(50) {
            format!(
                "WITH {alias} AS ({inner}) SELECT {key} AS k, {aggregate} AS a FROM {alias}{filter} GROUP BY 1"
            )
        } else {
            format!("SELECT {key} AS k, {aggregate} AS a FROM ({inner}) {alias}{filter} GROUP BY 1")
        }
    }

    fn any_type(&mut self) -> SqlType {
        *self.random.pick(&SqlType::VALUES)
    }

    /// An expression of `sql_type` over `scope`, nested at most `depth` deep.
    fn expression(&mut self, scope: &Scope, sql_type: SqlType, depth: usize) -> String {
        if depth <= 1 || self.random.chance(25) {
            return self.leaf(scope, sql_type);
        }
        let d = depth - 1;
        if self.random.chance(10) {
            let condition = self.expression(scope, SqlType::Bool, d);
            let then = self.expression(scope, sql_type, d);
            let otherwise = self.expression(scope, sql_type, d);
            return format!("CASE WHEN {condition} THEN {then} ELSE {otherwise} END");
        }
        if self.random.chance(8) {
            let first = self.expression(scope, sql_type, d);
            let second = self.expression(scope, sql_type, d);
            return format!("COALESCE({first}, {second})");
        }
        match sql_type {
            SqlType::Int => match self.random.below(7) {
                0..=2 => {
                    let operator = *self.random.pick(&["+", "-", "*", "%"]);
                    let left = self.expression(scope, SqlType::Int, d);
                    let right = self.expression(scope, SqlType::Int, d);
                    format!("({left} {operator} {right})")
                }
                3 => format!(
                    "CHARACTER_LENGTH({})",
                    self.expression(scope, SqlType::Text, d)
                ),
                4 => format!(
                    "CAST(EXTRACT(YEAR FROM {}) AS BIGINT)",
                    self.expression(scope, SqlType::Date, d)
                ),
                5 => format!(
                    "CAST({} AS BIGINT)",
                    self.expression(scope, SqlType::Decimal, d)
                ),
                _ => format!("ABS({})", self.expression(scope, SqlType::Int, d)),
            },
            SqlType::Float => match self.random.below(5) {
                0 | 1 => {
                    let operator = *self.random.pick(&["+", "-", "*", "/"]);
                    let left = self.expression(scope, SqlType::Float, d);
                    let right = self.expression(scope, SqlType::Float, d);
                    format!("({left} {operator} {right})")
                }
                2 => {
                    let source = *self.random.pick(&[SqlType::Int, SqlType::Decimal]);
                    format!("CAST({} AS DOUBLE)", self.expression(scope, source, d))
                }
                3 => format!("SQRT(ABS({}))", self.expression(scope, SqlType::Float, d)),
                _ => format!(
                    "ROUND({}, {})",
                    self.expression(scope, SqlType::Float, d),
                    self.random.below(4)
                ),
            },
            SqlType::Decimal => match self.random.below(4) {
                0 | 1 => {
                    let operator = *self.random.pick(&["+", "-", "*"]);
                    let left = self.expression(scope, SqlType::Decimal, d);
                    let right = self.expression(scope, SqlType::Decimal, d);
                    format!("CAST(({left} {operator} {right}) AS DECIMAL(15,2))")
                }
                2 => format!(
                    "CAST({} AS DECIMAL(15,2))",
                    self.expression(scope, SqlType::Int, d)
                ),
                _ => format!("ABS({})", self.expression(scope, SqlType::Decimal, d)),
            },
            SqlType::Text => match self.random.below(7) {
                0 => format!("UPPER({})", self.expression(scope, SqlType::Text, d)),
                1 => format!("LOWER({})", self.expression(scope, SqlType::Text, d)),
                2 => format!(
                    "SUBSTR({}, {}, {})",
                    self.expression(scope, SqlType::Text, d),
                    self.random.below(5),
                    self.random.below(6)
                ),
                3 => {
                    let left = self.expression(scope, SqlType::Text, d);
                    let right = self.expression(scope, SqlType::Text, d);
                    format!("({left} || {right})")
                }
                4 => format!("TRIM({})", self.expression(scope, SqlType::Text, d)),
                5 => {
                    let source = *self.random.pick(&[SqlType::Int, SqlType::Date]);
                    format!("CAST({} AS VARCHAR)", self.expression(scope, source, d))
                }
                _ => format!(
                    "REPLACE({}, 'a', 'b')",
                    self.expression(scope, SqlType::Text, d)
                ),
            },
            SqlType::Date => format!(
                "({} + INTERVAL '{}' DAY)",
                self.expression(scope, SqlType::Date, d),
                self.random.below(400)
            ),
            SqlType::Bool => self.predicate(scope, d),
        }
    }

    fn predicate(&mut self, scope: &Scope, d: usize) -> String {
        match self.random.below(12) {
            0 | 1 => {
                let operator = *self.random.pick(&["AND", "OR"]);
                let left = self.expression(scope, SqlType::Bool, d);
                let right = self.expression(scope, SqlType::Bool, d);
                format!("({left} {operator} {right})")
            }
            2 => format!("(NOT {})", self.expression(scope, SqlType::Bool, d)),
            3 => {
                let sql_type = self.any_type();
                let negation = if self.random.chance(50) { " NOT" } else { "" };
                format!(
                    "({} IS{negation} NULL)",
                    self.expression(scope, sql_type, d)
                )
            }
            4 => {
                let sql_type = self.any_type();
                let value = self.expression(scope, sql_type, d);
                let low = self.leaf(scope, sql_type);
                let high = self.leaf(scope, sql_type);
                format!("({value} BETWEEN {low} AND {high})")
            }
            5 => {
                let sql_type = self.any_type();
                let value = self.expression(scope, sql_type, d);
                let list: Vec<String> = (0..1 + self.random.below(4))
                    .map(|_| self.literal(sql_type))
                    .collect();
                format!("({value} IN ({}))", list.join(", "))
            }
            6 => {
                let pattern = *self.random.pick(&["'%a%'", "'A%'", "'%'", "''", "'_%s'"]);
                format!(
                    "({} LIKE {pattern})",
                    self.expression(scope, SqlType::Text, d)
                )
            }
            7 if self.aliases < 8 => self.subquery_predicate(scope),
            _ => {
                let sql_type = self.any_type();
                let operator = *self.random.pick(&["=", "<>", "<", "<=", ">", ">="]);
                let left = self.expression(scope, sql_type, d);
                let right = self.expression(scope, sql_type, d);
                format!("({left} {operator} {right})")
            }
        }
    }

    /// `IN (SELECT ...)`, a correlated `EXISTS`, or a comparison with a scalar subquery.
    fn subquery_predicate(&mut self, outer: &Scope) -> String {
        let table = self.random.pick(&self.tables).clone();
        let alias = self.alias();
        let inner = scope_of(&table, &alias);
        let sql_type = *self
            .random
            .pick(&[SqlType::Int, SqlType::Text, SqlType::Date]);
        let inner_value = self.leaf(&inner, sql_type);
        let outer_value = self.leaf(outer, sql_type);
        let inner_filter = self.expression(&inner, SqlType::Bool, 2);
        match self.random.below(3) {
            0 => {
                let negation = if self.random.chance(30) { "NOT " } else { "" };
                format!(
                    "({outer_value} {negation}IN (SELECT {inner_value} FROM {} {alias} WHERE {inner_filter}))",
                    table.name
                )
            }
            1 => {
                let negation = if self.random.chance(30) { "NOT " } else { "" };
                format!(
                    "({negation}EXISTS (SELECT 1 FROM {} {alias} WHERE {inner_value} = {outer_value} AND {inner_filter}))",
                    table.name
                )
            }
            _ => {
                let function = *self.random.pick(&["MIN", "MAX"]);
                format!(
                    "({outer_value} <= (SELECT {function}({inner_value}) FROM {} {alias} WHERE {inner_filter}))",
                    table.name
                )
            }
        }
    }

    /// A column of `sql_type` in scope, or a literal.
    fn leaf(&mut self, scope: &Scope, sql_type: SqlType) -> String {
        let columns = scope.of_type(sql_type);
        if !columns.is_empty() && self.random.chance(70) {
            return self.random.pick(&columns).reference.clone();
        }
        if sql_type == SqlType::Bool {
            return self.comparison_leaf(scope);
        }
        if sql_type == SqlType::Float && self.random.chance(40) {
            let numeric: Vec<&Visible> = scope
                .columns
                .iter()
                .filter(|c| c.sql_type.is_numeric())
                .collect();
            if !numeric.is_empty() {
                let column = self.random.pick(&numeric).reference.clone();
                return format!("CAST({column} AS DOUBLE)");
            }
        }
        self.literal(sql_type)
    }

    fn comparison_leaf(&mut self, scope: &Scope) -> String {
        let sql_type = self.any_type();
        let column = self.leaf(scope, sql_type);
        let value = self.literal(sql_type);
        let operator = *self.random.pick(&["=", "<", ">", "<>"]);
        format!("({column} {operator} {value})")
    }

    /// A literal of `sql_type`, often an edge value.
    fn literal(&mut self, sql_type: SqlType) -> String {
        if self.random.chance(8) {
            return format!("CAST(NULL AS {})", sql_type.sql_name());
        }
        match sql_type {
            SqlType::Int => self
                .random
                .pick(&[
                    "0",
                    "1",
                    "-1",
                    "7",
                    "42",
                    "1000",
                    "2147483647",
                    "-9223372036854775807",
                ])
                .to_string(),
            SqlType::Float => self
                .random
                .pick(&[
                    "0.0",
                    "CAST(-0.0 AS DOUBLE)",
                    "1.5",
                    "CAST('NaN' AS DOUBLE)",
                    "CAST('inf' AS DOUBLE)",
                    "CAST('-inf' AS DOUBLE)",
                    "CAST(1e-300 AS DOUBLE)",
                ])
                .to_string(),
            SqlType::Decimal => self
                .random
                .pick(&[
                    "CAST(0 AS DECIMAL(15,2))",
                    "CAST(0.05 AS DECIMAL(15,2))",
                    "CAST(-1.50 AS DECIMAL(15,2))",
                    "CAST(1000.00 AS DECIMAL(15,2))",
                    "CAST(9999999999999.99 AS DECIMAL(15,2))",
                    "CAST(-9999999999999.99 AS DECIMAL(15,2))",
                ])
                .to_string(),
            SqlType::Text => self
                .random
                .pick(&["''", "' '", "'a'", "'BUILDING'", "'é€'", "'%'", "'O'"])
                .to_string(),
            SqlType::Date => self
                .random
                .pick(&[
                    "DATE '1970-01-01'",
                    "DATE '1995-03-15'",
                    "DATE '1992-01-01'",
                    "DATE '1998-12-01'",
                    "DATE '9999-12-31'",
                    "DATE '0001-01-01'",
                ])
                .to_string(),
            SqlType::Bool => self
                .random
                .pick(&["TRUE", "FALSE", "CAST(NULL AS BOOLEAN)"])
                .to_string(),
        }
    }
}

fn scope_of(table: &CatalogTable, alias: &str) -> Scope {
    Scope {
        columns: table
            .columns
            .iter()
            .map(|c| Visible {
                reference: format!("{alias}.{}", c.name),
                sql_type: c.sql_type,
            })
            .collect(),
    }
}

/// The part of a column name after its table prefix: `orderkey` for `l_orderkey`.
fn key_suffix(name: &str) -> &str {
    name.split_once('_').map_or(name, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogTable> {
        let column = |name: &str, sql_type, unique| CatalogColumn {
            name: name.to_string(),
            sql_type,
            unique,
        };
        vec![
            CatalogTable {
                name: "orders".to_string(),
                rows: 1000,
                columns: vec![
                    column("o_orderkey", SqlType::Int, true),
                    column("o_totalprice", SqlType::Decimal, false),
                    column("o_orderdate", SqlType::Date, false),
                ],
            },
            CatalogTable {
                name: "lineitem".to_string(),
                rows: 4000,
                columns: vec![
                    column("l_orderkey", SqlType::Int, false),
                    column("l_comment", SqlType::Text, false),
                    column("l_discount", SqlType::Float, false),
                ],
            },
        ]
    }

    #[test]
    fn the_same_seed_and_index_give_the_same_query() {
        let a = SqlGenerator::new(catalog(), 7, 3, 4).query();
        let b = SqlGenerator::new(catalog(), 7, 3, 4).query();
        let c = SqlGenerator::new(catalog(), 7, 4, 4).query();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn joins_only_reach_unique_keys_and_limits_follow_full_orderings() {
        let mut joins = 0;
        for index in 0..500 {
            let sql = SqlGenerator::new(catalog(), 1, index, 3).query();
            if sql.contains(" JOIN orders ") {
                joins += 1;
            }
            assert!(!sql.contains(" JOIN lineitem "), "{sql}");
            if let Some(limit) = sql.find(" LIMIT ") {
                assert!(sql[..limit].contains(" ORDER BY 1"), "{sql}");
            }
        }
        assert!(joins > 10, "only {joins} joins in 500 queries");
    }
}
