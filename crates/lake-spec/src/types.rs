//! Column types as a data engineer writes them in `dataset.toml`: Iceberg's
//! own type names (`string`, `long`, `decimal(12, 2)`, `timestamptz`),
//! `list<…>`, `map<…, …>` and `struct<name: type, …>`, each optionally
//! followed by `not null` (a required field, list element or map value).
//!
//! ```text
//! type   := base ["not" "null"]
//! base   := primitive | "decimal" "(" int "," int ")" | "fixed" "[" int "]"
//!         | "list" "<" type ">" | "map" "<" type "," type ">"
//!         | "struct" "<" name ":" type ("," name ":" type)* ">"
//! ```
//!
//! A few SQL spellings are accepted beside Iceberg's (`bigint`, `integer`,
//! `varchar`, `bool`, `real`). Field ids are not written: they are assigned
//! when the schema is built, fields of a struct before their children.

use iceberg::spec::{ListType, MapType, NestedField, PrimitiveType, StructType, Type};

/// A parsed type, before field ids exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Primitive(PrimitiveType),
    List(Box<Column>),
    Map(Box<Column>, Box<Column>),
    Struct(Vec<(String, Column)>),
}

/// A type and whether values may be null.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub shape: Shape,
    pub required: bool,
}

/// Where and why a type did not parse: the byte offset in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeError {
    pub at: usize,
    pub message: String,
}

impl std::fmt::Display for TypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at + 1)
    }
}

/// Parses one type, e.g. `list<struct<sku: string not null, qty: int>>`.
pub fn parse(text: &str) -> Result<Column, TypeError> {
    let mut parser = Parser { text, at: 0 };
    let column = parser.column()?;
    parser.skip_blanks();
    if parser.at < text.len() {
        return Err(parser.error(format!(
            "unexpected `{}` after the type",
            parser.rest().chars().next().unwrap_or(' ')
        )));
    }
    Ok(column)
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn error(&self, message: String) -> TypeError {
        TypeError {
            at: self.at,
            message,
        }
    }

    fn skip_blanks(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// The next word (letters, digits, `_`), lower-cased, without moving on.
    fn peek_word(&self) -> Option<String> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| rest[..end].to_ascii_lowercase())
    }

    fn word(&mut self) -> Result<String, TypeError> {
        self.skip_blanks();
        let word = self
            .peek_word()
            .ok_or_else(|| self.error("expected a name or a type".into()))?;
        self.at += word.len();
        Ok(word)
    }

    fn expect(&mut self, symbol: char) -> Result<(), TypeError> {
        self.skip_blanks();
        if self.rest().starts_with(symbol) {
            self.at += symbol.len_utf8();
            Ok(())
        } else {
            Err(self.error(format!("expected `{symbol}`")))
        }
    }

    fn number(&mut self) -> Result<u32, TypeError> {
        self.skip_blanks();
        let rest = self.rest();
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number = rest[..end]
            .parse()
            .map_err(|_| self.error("expected a number".into()))?;
        self.at += end;
        Ok(number)
    }

    fn column(&mut self) -> Result<Column, TypeError> {
        let shape = self.shape()?;
        self.skip_blanks();
        let required = if self.peek_word().as_deref() == Some("not") {
            self.word()?;
            let at = self.at;
            if self.word()? != "null" {
                return Err(TypeError {
                    at,
                    message: "expected `null` after `not`".into(),
                });
            }
            true
        } else {
            false
        };
        Ok(Column { shape, required })
    }

    fn shape(&mut self) -> Result<Shape, TypeError> {
        self.skip_blanks();
        let start = self.at;
        let name = self.word()?;
        let primitive = match name.as_str() {
            "boolean" | "bool" => PrimitiveType::Boolean,
            "int" | "integer" => PrimitiveType::Int,
            "long" | "bigint" => PrimitiveType::Long,
            "float" | "real" => PrimitiveType::Float,
            "double" => PrimitiveType::Double,
            "date" => PrimitiveType::Date,
            "time" => PrimitiveType::Time,
            "timestamp" => PrimitiveType::Timestamp,
            "timestamptz" => PrimitiveType::Timestamptz,
            "string" | "varchar" => PrimitiveType::String,
            "uuid" => PrimitiveType::Uuid,
            "binary" => PrimitiveType::Binary,
            "decimal" => {
                self.expect('(')?;
                let precision = self.number()?;
                self.expect(',')?;
                let scale = self.number()?;
                self.expect(')')?;
                if precision == 0 || precision > 38 || scale > precision {
                    return Err(TypeError {
                        at: start,
                        message: format!(
                            "decimal({precision}, {scale}): precision is 1 to 38 and the scale \
                             at most the precision"
                        ),
                    });
                }
                PrimitiveType::Decimal { precision, scale }
            }
            "fixed" => {
                self.expect('[')?;
                let length = self.number()?;
                self.expect(']')?;
                PrimitiveType::Fixed(u64::from(length))
            }
            "list" => {
                self.expect('<')?;
                let element = self.column()?;
                self.expect('>')?;
                return Ok(Shape::List(Box::new(element)));
            }
            "map" => {
                self.expect('<')?;
                let key = self.column()?;
                self.expect(',')?;
                let value = self.column()?;
                self.expect('>')?;
                return Ok(Shape::Map(Box::new(key), Box::new(value)));
            }
            "struct" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                loop {
                    let at = self.at;
                    let field = self.word()?;
                    if fields.iter().any(|(name, _)| *name == field) {
                        return Err(TypeError {
                            at,
                            message: format!("field `{field}` twice in one struct"),
                        });
                    }
                    self.expect(':')?;
                    fields.push((field, self.column()?));
                    self.skip_blanks();
                    if self.rest().starts_with(',') {
                        self.at += 1;
                        continue;
                    }
                    self.expect('>')?;
                    break;
                }
                return Ok(Shape::Struct(fields));
            }
            other => {
                return Err(TypeError {
                    at: start,
                    message: format!(
                        "unknown type `{other}`: boolean, int, long, float, double, \
                         decimal(p, s), date, time, timestamp, timestamptz, string, uuid, \
                         binary, fixed[n], list<…>, map<…, …> or struct<…>"
                    ),
                });
            }
        };
        Ok(Shape::Primitive(primitive))
    }
}

/// Builds Iceberg fields from named columns, ids assigned from 1: the
/// fields of a struct first, then the children of each (as Iceberg assigns
/// fresh ids).
pub fn build_fields(columns: &[(String, Column)]) -> Vec<iceberg::spec::NestedFieldRef> {
    let mut next = 1 + columns.len() as i32;
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, column))| field(1 + i as i32, name, column, &mut next))
        .collect()
}

fn field(id: i32, name: &str, column: &Column, next: &mut i32) -> iceberg::spec::NestedFieldRef {
    let field_type = build_type(&column.shape, next);
    if column.required {
        NestedField::required(id, name, field_type).into()
    } else {
        NestedField::optional(id, name, field_type).into()
    }
}

fn take(next: &mut i32, count: usize) -> i32 {
    let first = *next;
    *next += count as i32;
    first
}

fn build_type(shape: &Shape, next: &mut i32) -> Type {
    match shape {
        Shape::Primitive(p) => Type::Primitive(p.clone()),
        Shape::List(element) => {
            let id = take(next, 1);
            let element_type = build_type(&element.shape, next);
            Type::List(ListType::new(
                NestedField::list_element(id, element_type, element.required).into(),
            ))
        }
        Shape::Map(key, value) => {
            let first = take(next, 2);
            let key_type = build_type(&key.shape, next);
            let value_type = build_type(&value.shape, next);
            Type::Map(MapType::new(
                NestedField::map_key_element(first, key_type).into(),
                NestedField::map_value_element(first + 1, value_type, value.required).into(),
            ))
        }
        Shape::Struct(fields) => {
            let first = take(next, fields.len());
            Type::Struct(StructType::new(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, (name, column))| field(first + i as i32, name, column, next))
                    .collect(),
            ))
        }
    }
}

/// How a type is written in `dataset.toml` (the inverse of [`parse`], for
/// messages about a table's columns).
pub fn describe(field_type: &Type) -> String {
    match field_type {
        Type::Primitive(PrimitiveType::Decimal { precision, scale }) => {
            format!("decimal({precision}, {scale})")
        }
        Type::Primitive(PrimitiveType::Fixed(n)) => format!("fixed[{n}]"),
        Type::Primitive(p) => p.to_string(),
        Type::List(list) => format!(
            "list<{}{}>",
            describe(&list.element_field.field_type),
            if list.element_field.required {
                " not null"
            } else {
                ""
            }
        ),
        Type::Map(map) => format!(
            "map<{}, {}{}>",
            describe(&map.key_field.field_type),
            describe(&map.value_field.field_type),
            if map.value_field.required {
                " not null"
            } else {
                ""
            }
        ),
        Type::Struct(fields) => format!(
            "struct<{}>",
            fields
                .fields()
                .iter()
                .map(|f| format!(
                    "{}: {}{}",
                    f.name,
                    describe(&f.field_type),
                    if f.required { " not null" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Column {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn primitives_nesting_and_not_null() {
        assert_eq!(
            ok("string not null"),
            Column {
                shape: Shape::Primitive(PrimitiveType::String),
                required: true
            }
        );
        assert_eq!(ok(" BIGINT ").shape, Shape::Primitive(PrimitiveType::Long));
        assert_eq!(
            ok("decimal(12, 2)").shape,
            Shape::Primitive(PrimitiveType::Decimal {
                precision: 12,
                scale: 2
            })
        );
        let items = ok("list<struct<sku: string not null, qty: int,\n price: decimal(12,2)>>");
        let Shape::List(element) = items.shape else {
            panic!("a list")
        };
        let Shape::Struct(fields) = &element.shape else {
            panic!("of structs")
        };
        assert_eq!(fields.len(), 3);
        assert!(fields[0].1.required && !fields[1].1.required);
        assert!(matches!(ok("map<string, long not null>").shape, Shape::Map(_, v) if v.required));
        assert_eq!(
            ok("fixed[16]").shape,
            Shape::Primitive(PrimitiveType::Fixed(16))
        );
    }

    #[test]
    fn mistakes_are_placed() {
        let error = parse("list<strin>").unwrap_err();
        assert_eq!(error.at, 5);
        assert!(error.message.starts_with("unknown type `strin`"), "{error}");
        assert_eq!(parse("struct<a int>").unwrap_err().message, "expected `:`");
        assert_eq!(
            parse("string not nul").unwrap_err().message,
            "expected `null` after `not`"
        );
        assert!(parse("decimal(40, 2)").is_err());
        assert!(parse("struct<a: int, a: long>").is_err());
        assert_eq!(
            parse("long long").unwrap_err().message,
            "unexpected `l` after the type"
        );
    }

    #[test]
    fn ids_go_to_a_structs_fields_before_their_children() {
        let columns = vec![
            ("id".to_string(), ok("string not null")),
            (
                "user".to_string(),
                ok("struct<name: string, tags: list<string>>"),
            ),
            ("n".to_string(), ok("long")),
        ];
        let fields = build_fields(&columns);
        let ids: Vec<i32> = fields.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let Type::Struct(user) = fields[1].field_type.as_ref() else {
            panic!("struct")
        };
        assert_eq!(user.fields()[0].id, 4);
        assert_eq!(user.fields()[1].id, 5);
        let Type::List(tags) = user.fields()[1].field_type.as_ref() else {
            panic!("list")
        };
        assert_eq!(tags.element_field.id, 6);
        assert_eq!(
            describe(&fields[1].field_type),
            "struct<name: string, tags: list<string>>"
        );
    }
}
