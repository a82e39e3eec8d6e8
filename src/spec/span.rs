//! Values that remember where they were written in the experiment file (byte span), for errors.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Range;

/// A value with its byte span in the experiment file. Serialises and documents as the bare value.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T> Sp<T> {
    pub fn new(value: T) -> Sp<T> {
        Sp { value, span: 0..0 }
    }
}

impl<T: Default> Default for Sp<T> {
    fn default() -> Sp<T> {
        Sp::new(T::default())
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, o: &Self) -> bool {
        self.value == o.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_spanned::Spanned::<T>::deserialize(d)?;
        let span = s.span();
        Ok(Sp { value: s.into_inner(), span })
    }
}

impl<T: Serialize> Serialize for Sp<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// Declares a typed reference by name (to a model, dataset or stage). It serialises as
/// `{"$model": name}` (etc.) so that fingerprints can replace the name by what it points at.
macro_rules! reference {
    ($name:ident, $tag:literal, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Sp<String>);

        impl $name {
            pub const TAG: &'static str = $tag;
            pub fn name(&self) -> &str {
                &self.0.value
            }
            pub fn span(&self) -> Range<usize> {
                self.0.span.clone()
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(Sp::new(s.to_string()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry($tag, self.name())?;
                m.end()
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": concat!("name of ", $what, " defined in this file") })
            }
        }
    };
}

reference!(ModelRef, "$model", "a [models.NAME] entry");
reference!(DatasetRef, "$dataset", "a [datasets.NAME] entry");
reference!(StageRef, "$stage", "a [stages.NAME] entry");

impl AsRef<str> for Sp<String> {
    fn as_ref(&self) -> &str {
        &self.value
    }
}
