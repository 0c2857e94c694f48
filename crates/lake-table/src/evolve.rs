//! A table follows the schema its declaration wants: bronze the payload of
//! its `dataset.toml`, silver and gold what their models return.
//!
//! Compatible changes are applied as Iceberg schema evolution: a new
//! optional field, at the top level or inside a struct (of a list too), gets
//! a fresh column id, and existing files read it as null. A column the
//! declaration no longer has stays in the table while it is optional (old
//! files hold it; new rows leave it null). Everything else — a new `not
//! null` field, a changed type, a field becoming `not null` or optional, a
//! required field removed — is refused with every such change named, and
//! nothing is written.
//!
//! The partitioning follows too ([`follow_partitioning`]): a table whose
//! default spec differs from the wanted one gets the wanted spec added and
//! made the default (Iceberg partition evolution). New files are written
//! under it; files already written keep the spec they were written with and
//! stay readable, until compaction rewrites them.

use iceberg::spec::{NestedFieldRef, PartitionSpec, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{TableRequirement, TableUpdate};
use iceberg_catalog_rest::CommitTableRequest;

use crate::catalog::{LakeCatalog, Outcome};
use crate::error::{Error, Result};

/// What following a declaration would do to a table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New optional fields: the parent's dotted path (empty at the top)
    /// and the field.
    pub additions: Vec<(String, String, Type)>,
    /// Changes that cannot be applied, in words.
    pub refused: Vec<String>,
}

/// Whether two types are the same shape: field ids aside, the same
/// primitives, struct field names and nullability, list and map elements.
pub fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields().iter().zip(y.fields()).all(|(f, g)| {
                    f.name == g.name
                        && f.required == g.required
                        && same_type(&f.field_type, &g.field_type)
                })
        }
        (Type::List(x), Type::List(y)) => {
            x.element_field.required == y.element_field.required
                && same_type(&x.element_field.field_type, &y.element_field.field_type)
        }
        (Type::Map(x), Type::Map(y)) => {
            same_type(&x.key_field.field_type, &y.key_field.field_type)
                && x.value_field.required == y.value_field.required
                && same_type(&x.value_field.field_type, &y.value_field.field_type)
        }
        _ => false,
    }
}

fn describe(field_type: &Type) -> String {
    match field_type {
        Type::Primitive(p) => p.to_string(),
        Type::Struct(_) => "a struct".into(),
        Type::List(_) => "a list".into(),
        Type::Map(_) => "a map".into(),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Compares the table's fields with the wanted ones under `parent`.
fn compare(parent: &str, have: &[NestedFieldRef], want: &[NestedFieldRef], plan: &mut Plan) {
    for wanted in want {
        let path = join(parent, &wanted.name);
        let Some(existing) = have.iter().find(|f| f.name == wanted.name) else {
            if wanted.required {
                plan.refused.push(format!(
                    "`{path}` is new and `not null`: rows already written have no value for \
                     it; declare it optional"
                ));
            } else {
                plan.additions.push((
                    parent.to_string(),
                    wanted.name.clone(),
                    (*wanted.field_type).clone(),
                ));
            }
            continue;
        };
        if existing.required != wanted.required {
            plan.refused.push(if wanted.required {
                format!("`{path}` cannot become `not null`: rows already written may lack it")
            } else {
                format!(
                    "`{path}` is `not null` in the table and optional in the declaration; lake \
                     does not relax a column: declare it `not null` again"
                )
            });
        }
        match (existing.field_type.as_ref(), wanted.field_type.as_ref()) {
            (Type::Struct(old), Type::Struct(new)) => {
                compare(&path, old.fields(), new.fields(), plan);
            }
            (Type::List(old), Type::List(new)) => match (
                old.element_field.field_type.as_ref(),
                new.element_field.field_type.as_ref(),
            ) {
                (Type::Struct(old), Type::Struct(new)) => {
                    compare(&path, old.fields(), new.fields(), plan);
                }
                (old_element, new_element) if !same_type(old_element, new_element) => {
                    plan.refused.push(format!(
                        "`{path}` holds {} in the table and {} in the declaration: the type of \
                         a column does not change",
                        describe(old_element),
                        describe(new_element)
                    ));
                }
                _ => {}
            },
            (old, new) if !same_type(old, new) => plan.refused.push(format!(
                "`{path}` is {} in the table and {} in the declaration: the type of a column \
                 does not change (add a column of the new type instead)",
                describe(old),
                describe(new)
            )),
            _ => {}
        }
    }
    for existing in have {
        if existing.required && !want.iter().any(|f| f.name == existing.name) {
            plan.refused.push(format!(
                "`{}` is `not null` in the table and missing from the declaration: a required \
                 field is not removed",
                join(parent, &existing.name)
            ));
        }
    }
}

/// What following `wanted` would do to `table`'s current schema; the
/// top-level columns named in `keep` (lake's own) are left out of the
/// comparison.
pub fn plan(table: &Schema, wanted: &Schema, keep: &[&str]) -> Plan {
    let but_kept = |schema: &Schema| -> Vec<NestedFieldRef> {
        schema
            .as_struct()
            .fields()
            .iter()
            .filter(|f| !keep.contains(&f.name.as_str()))
            .cloned()
            .collect()
    };
    let (have, want) = (but_kept(table), but_kept(wanted));
    let mut plan = Plan::default();
    compare("", &have, &want, &mut plan);
    plan
}

/// How [`follow`] treats changes it cannot apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Refuse them all (a declared schema: bronze's payload).
    Refuse,
    /// Add what is new and leave the rest to the writer, which casts each
    /// column to the table's type (a model's inferred output types).
    AddOnly,
}

/// Brings `table` to `wanted` (see the module docs); `source` names the
/// declaration in messages. Returns the table as it is afterwards.
pub async fn follow(
    catalog: &LakeCatalog,
    table: Table,
    wanted: &Schema,
    keep: &[&str],
    changes: Changes,
    source: &str,
) -> Result<Table> {
    let plan = plan(table.metadata().current_schema(), wanted, keep);
    if changes == Changes::Refuse && !plan.refused.is_empty() {
        return Err(Error::SchemaChange(format!(
            "{} cannot follow {source}; nothing was written:\n  - {}",
            table.identifier(),
            plan.refused.join("\n  - ")
        )));
    }
    if plan.additions.is_empty() {
        return Ok(table);
    }
    let names: Vec<String> = plan
        .additions
        .iter()
        .map(|(parent, name, _)| join(parent, name))
        .collect();
    let tx = Transaction::new(&table);
    let mut action = tx.update_schema();
    for (parent, name, field_type) in plan.additions {
        action = action.add_column(if parent.is_empty() {
            AddColumn::optional(name, field_type)
        } else {
            AddColumn::builder()
                .parent(parent)
                .name(name)
                .field_type(field_type)
                .build()
        });
    }
    let tx = action.apply(tx)?;
    match tx.commit(catalog.rest()).await {
        Ok(table) => {
            tracing::info!(
                table = %table.identifier(),
                columns = %names.join(", "),
                "added columns, as {source} declares"
            );
            Ok(table)
        }
        // Another process evolved it first: what it made must now fit.
        Err(e) => {
            let reloaded = catalog.load(table.identifier()).await?;
            let again = self::plan(reloaded.metadata().current_schema(), wanted, keep);
            if again.additions.is_empty() && again.refused.is_empty() {
                Ok(reloaded)
            } else {
                Err(e.into())
            }
        }
    }
}

/// Sets the properties the declaration owns on `table` to the values it
/// wants (`None`: removed), in one commit when any differs; other
/// properties are left alone. `source` names the declaration in logs.
pub async fn follow_properties(
    catalog: &LakeCatalog,
    table: Table,
    wanted: &[(&str, Option<String>)],
    source: &str,
) -> Result<Table> {
    let have = table.metadata().properties();
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (key, value) in wanted {
        match (have.get(*key), value) {
            (Some(old), Some(new)) if old == new => {}
            (_, Some(new)) => set.push((key.to_string(), new.clone())),
            (Some(_), None) => remove.push(key.to_string()),
            (None, None) => {}
        }
    }
    // An empty update is refused by some catalogs, and would be a needless
    // commit anyway.
    if set.is_empty() && remove.is_empty() {
        return Ok(table);
    }
    let changed: Vec<String> = set
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(remove.iter().map(|k| format!("{k} removed")))
        .collect();
    let tx = Transaction::new(&table);
    let mut action = tx.update_table_properties();
    for (key, value) in set {
        action = action.set(key, value);
    }
    for key in remove {
        action = action.remove(key);
    }
    let tx = action.apply(tx)?;
    let table = tx.commit(catalog.rest()).await?;
    tracing::info!(
        table = %table.identifier(),
        properties = %changed.join(", "),
        "table properties follow {source}"
    );
    Ok(table)
}

/// A partitioning as the fields it is made of: source column id and
/// transform, in order. Names and field ids do not make two specs differ.
fn shape(fields: impl Iterator<Item = (i32, Transform)>) -> Vec<(i32, Transform)> {
    fields.collect()
}

fn bound_shape(spec: &PartitionSpec) -> Vec<(i32, Transform)> {
    shape(spec.fields().iter().map(|f| (f.source_id, f.transform)))
}

fn unbound_shape(spec: &UnboundPartitionSpec) -> Vec<(i32, Transform)> {
    shape(spec.fields().iter().map(|f| (f.source_id, f.transform)))
}

/// Makes `wanted` the table's default partition spec unless it already is:
/// an earlier spec of the same shape is made the default again, else
/// `wanted` is added. The commit asserts the default spec and the last
/// partition field id it saw, so two processes evolving at once cannot
/// both add a spec; the loser finds the table as it wants it. `source`
/// names the declaration in logs.
pub async fn follow_partitioning(
    catalog: &LakeCatalog,
    table: Table,
    wanted: &UnboundPartitionSpec,
    source: &str,
) -> Result<Table> {
    let want = unbound_shape(wanted);
    let mut base = table;
    for _ in 0..crate::ops::MAX_ATTEMPTS {
        let metadata = base.metadata();
        if bound_shape(metadata.default_partition_spec()) == want {
            return Ok(base);
        }
        let earlier = metadata
            .partition_specs_iter()
            .find(|spec| bound_shape(spec) == want)
            .map(|spec| spec.spec_id());
        let updates = match earlier {
            Some(spec_id) => vec![TableUpdate::SetDefaultSpec { spec_id }],
            None => vec![
                TableUpdate::AddSpec {
                    spec: wanted.clone(),
                },
                // -1: the spec this commit adds.
                TableUpdate::SetDefaultSpec { spec_id: -1 },
            ],
        };
        let request = CommitTableRequest {
            identifier: Some(base.identifier().clone()),
            requirements: vec![
                TableRequirement::UuidMatch {
                    uuid: metadata.uuid(),
                },
                TableRequirement::DefaultSpecIdMatch {
                    default_spec_id: metadata.default_partition_spec_id(),
                },
                TableRequirement::LastAssignedPartitionIdMatch {
                    last_assigned_partition_id: metadata.last_partition_id(),
                },
            ],
            updates,
        };
        let from = metadata.default_partition_spec_id();
        match catalog
            .commit_table(base.identifier(), &request, &base)
            .await?
        {
            Outcome::Committed(table) => {
                tracing::info!(
                    table = %table.identifier(),
                    from_spec = from,
                    to_spec = table.metadata().default_partition_spec_id(),
                    "partitioning changed, as {source} declares; files written before keep theirs"
                );
                return Ok(table);
            }
            Outcome::Refused(message) => {
                return Err(Error::Catalog(format!(
                    "{}: changing the partitioning was refused: {message}",
                    base.identifier()
                )));
            }
            // Another process changed the table (or the answer was lost):
            // the reload shows whether anything is left to do.
            Outcome::Conflict(_) | Outcome::Retry(_) | Outcome::Unknown(_) => {}
        }
        base = catalog.load(base.identifier()).await?;
    }
    Err(Error::TooManyConflicts {
        table: base.identifier().clone(),
        attempts: crate::ops::MAX_ATTEMPTS as u32,
    })
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{ListType, NestedField, PrimitiveType, StructType};

    use super::*;

    fn schema(fields: Vec<NestedFieldRef>) -> Schema {
        Schema::builder()
            .with_fields(fields)
            .build()
            .expect("schema")
    }

    fn string() -> Type {
        Type::Primitive(PrimitiveType::String)
    }

    fn items(extra: bool) -> Type {
        let mut fields = vec![NestedField::required(11, "sku", string()).into()];
        if extra {
            fields.push(NestedField::optional(12, "note", string()).into());
        }
        Type::List(ListType::new(
            NestedField::list_element(10, Type::Struct(StructType::new(fields)), false).into(),
        ))
    }

    #[test]
    fn new_optional_fields_are_added_and_the_rest_refused() {
        let table = schema(vec![
            NestedField::required(1, "id", string()).into(),
            NestedField::optional(2, "items", items(false)).into(),
            NestedField::optional(3, "old", string()).into(),
            NestedField::required(1000, "_raw", string()).into(),
        ]);
        let wanted = schema(vec![
            NestedField::required(1, "id", string()).into(),
            NestedField::optional(2, "items", items(true)).into(),
            NestedField::optional(4, "coupon", string()).into(),
        ]);
        let plan = plan(&table, &wanted, &["_raw"]);
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        let added: Vec<(String, String)> = plan
            .additions
            .iter()
            .map(|(p, n, _)| (p.clone(), n.clone()))
            .collect();
        assert_eq!(
            added,
            [
                ("items".to_string(), "note".to_string()),
                (String::new(), "coupon".to_string())
            ]
        );

        let narrowed = schema(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(5, "must", string()).into(),
        ]);
        let refused = super::plan(&table, &narrowed, &["_raw"]).refused;
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("`id` is string in the table and long"));
        assert!(refused[1].starts_with("`must` is new and `not null`"));
        let without_id = schema(vec![NestedField::optional(3, "old", string()).into()]);
        let refused = super::plan(&table, &without_id, &["_raw"]).refused;
        assert_eq!(
            refused,
            [
                "`id` is `not null` in the table and missing from the declaration: a required \
              field is not removed"
            ]
        );
    }
}
