//! Label selectors as `metav1.LabelSelectorAsSelector` interprets them: a missing selector matches
//! nothing, an empty one matches everything, `matchLabels` and `matchExpressions` are ANDed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Errors turning a `LabelSelector` into a matcher.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// An expression used an operator other than In, NotIn, Exists and DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// In and NotIn need at least one value.
    #[error("values: Required value: must be specified when `operator` is 'In' or 'NotIn'")]
    MissingValues,
    /// Exists and DoesNotExist take no values.
    #[error("values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")]
    UnexpectedValues,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector that can be matched against label maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Matches no object (a missing selector).
    Nothing,
    /// Matches when every requirement holds (an empty list matches everything).
    All(Vec<RequirementMatcher>),
}

/// One requirement of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementMatcher(Requirement);

impl Selector {
    /// Parses an optional selector: `None` selects nothing.
    pub fn from_optional(selector: Option<&LabelSelector>) -> Result<Self, Error> {
        match selector {
            None => Ok(Selector::Nothing),
            Some(s) => Self::from_label_selector(s),
        }
    }

    /// Parses a selector; an empty one selects everything.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Self, Error> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(RequirementMatcher(Requirement::Equals(key.clone(), value.clone())));
        }
        for expr in selector.match_expressions.iter().flatten() {
            requirements.push(RequirementMatcher(parse_requirement(expr)?));
        }
        Ok(Selector::All(requirements))
    }

    /// Whether this selector selects every object (upstream's `selector.Empty()`).
    pub fn is_everything(&self) -> bool {
        matches!(self, Selector::All(r) if r.is_empty())
    }

    /// Whether the labels satisfy the selector.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        match self {
            Selector::Nothing => false,
            Selector::All(requirements) => requirements.iter().all(|r| r.matches(labels)),
        }
    }
}

impl RequirementMatcher {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match &self.0 {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

fn parse_requirement(expr: &LabelSelectorRequirement) -> Result<Requirement, Error> {
    let values = expr.values.clone().unwrap_or_default();
    let key = expr.key.clone();
    match expr.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(Error::MissingValues),
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(Error::UnexpectedValues),
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
        other => Err(Error::InvalidOperator(other.to_string())),
    }
}

/// Whether a selector has no requirements at all (upstream rejects such Deployments).
pub fn is_empty_selector(selector: Option<&LabelSelector>) -> bool {
    selector.is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

/// A copy of `selector` that also requires `key=value` (upstream `CloneSelectorAndAddLabel`).
pub fn with_label(selector: Option<&LabelSelector>, key: &str, value: &str) -> LabelSelector {
    let mut out = selector.cloned().unwrap_or_default();
    out.match_labels.get_or_insert_with(BTreeMap::new).insert(key.to_string(), value.to_string());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn missing_selector_matches_nothing_and_empty_matches_everything() {
        assert!(!Selector::from_optional(None).unwrap().matches(Some(&labels(&[("a", "b")]))));
        let everything = Selector::from_label_selector(&LabelSelector::default()).unwrap();
        assert!(everything.is_everything());
        assert!(everything.matches(None));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "edge".into()]),
                },
                LabelSelectorRequirement { key: "canary".into(), operator: "DoesNotExist".into(), values: None },
            ]),
        };
        let s = Selector::from_label_selector(&selector).unwrap();
        assert!(s.matches(Some(&labels(&[("app", "web"), ("tier", "edge")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "back")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "edge"), ("canary", "1")]))));
        assert!(!s.matches(Some(&labels(&[("tier", "edge")]))));
    }

    #[test]
    fn not_in_matches_missing_key_and_bad_operator_is_rejected() {
        let s = Selector::from_label_selector(&LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
            ..Default::default()
        })
        .unwrap();
        assert!(s.matches(Some(&labels(&[]))));
        assert!(!s.matches(Some(&labels(&[("env", "prod")]))));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(Selector::from_label_selector(&bad), Err(Error::InvalidOperator("Like".into())));
    }

    #[test]
    fn with_label_adds_the_hash_key() {
        let base = LabelSelector { match_labels: Some(labels(&[("app", "web")])), ..Default::default() };
        let out = with_label(Some(&base), "pod-template-hash", "abc");
        assert_eq!(out.match_labels.unwrap(), labels(&[("app", "web"), ("pod-template-hash", "abc")]));
        assert!(is_empty_selector(Some(&LabelSelector::default())));
        assert!(!is_empty_selector(Some(&base)));
    }
}
