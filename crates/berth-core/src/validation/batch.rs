//! `batch/v1` validation (`pkg/apis/batch/validation`) and the cron syntax check of
//! `robfig/cron/v3`'s standard parser, which upstream uses for CronJob schedules.

use serde_json::Value;

use super::json::{has, str_at};
use super::meta::{label_selector, selector_matches};
use super::names::{go_label_selector, go_string_map, invalid_shown};
use super::{Errors, nonnegative, pod};
use crate::status::FieldError;

/// `validateJobSpec` at `path` (`spec` or `spec.jobTemplate.spec`).
fn job_spec(spec: &Value, path: &str, errs: &mut Errors) {
    for field in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec, field, path, errs);
    }
    if let Some(mode) = spec.get("completionMode").and_then(Value::as_str) {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(FieldError::not_supported(
                format!("{path}.completionMode"),
                &Value::from(mode),
                &["NonIndexed", "Indexed"],
            ));
        }
        if mode == "Indexed" && !has(spec, "/completions") {
            errs.push(FieldError::required(format!("{path}.completions"), "when completion mode is Indexed"));
        }
    }
    if let Some(policy) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        let failure_policy = has(spec, "/podFailurePolicy");
        if failure_policy && policy != "Failed" {
            errs.push(FieldError::not_supported(
                format!("{path}.podReplacementPolicy"),
                &Value::from(policy),
                &["Failed"],
            ));
        } else if policy != "TerminatingOrFailed" && policy != "Failed" {
            errs.push(FieldError::not_supported(
                format!("{path}.podReplacementPolicy"),
                &Value::from(policy),
                &["TerminatingOrFailed", "Failed"],
            ));
        }
    }
    let tpl_path = format!("{path}.template");
    let tpl = spec.get("template").unwrap_or(&Value::Null);
    pod::template(tpl, &tpl_path, errs);
    let restart_path = format!("{tpl_path}.spec.restartPolicy");
    let restart = str_at(tpl, "/spec/restartPolicy");
    let failure_policy = has(spec, "/podFailurePolicy");
    if restart == "Always" || restart.is_empty() {
        let detail = if failure_policy {
            "only \"Never\" is supported when podFailurePolicy is specified"
        } else {
            "valid values: \"OnFailure\", \"Never\""
        };
        errs.push(FieldError::required(restart_path, detail));
    } else if failure_policy && restart != "Never" {
        errs.push(FieldError::not_supported(restart_path, &Value::from(restart), &["Never"]));
    } else if restart != "OnFailure" && restart != "Never" {
        errs.push(FieldError::not_supported(restart_path, &Value::from(restart), &["OnFailure", "Never"]));
    }
}

pub(crate) fn job(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let template_labels = spec.pointer("/template/metadata/labels");
    match spec.get("selector").filter(|s| s.is_object()) {
        None => {
            errs.push(FieldError::required("spec.selector", ""));
            errs.push(invalid_shown(
                "spec.template.metadata.labels",
                &go_string_map(template_labels),
                "`selector` does not match template `labels`",
            ));
        }
        Some(sel) => {
            label_selector(sel, "spec.selector", errs);
            if selector_matches(sel, template_labels) == Some(false) {
                errs.push(invalid_shown(
                    "spec.template.metadata.labels",
                    &go_string_map(template_labels),
                    "`selector` does not match template `labels`",
                ));
            }
            // A generated selector must select this job's uid.
            let uid = str_at(obj, "/metadata/uid");
            let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
            if old.is_none()
                && !manual
                && !uid.is_empty()
                && str_at(sel, "/matchLabels/batch.kubernetes.io~1controller-uid") != uid
            {
                errs.push(invalid_shown(
                    "spec.selector",
                    &go_label_selector(Some(sel)),
                    "`selector` not auto-generated",
                ));
            }
        }
    }
    job_spec(spec, "spec", errs);

    let Some(old) = old else { return };
    let old_spec = old.get("spec").unwrap_or(&Value::Null);
    let indexed_elastic = str_at(spec, "/completionMode") == "Indexed"
        && spec.get("completions").is_some()
        && spec.get("completions") == spec.get("parallelism");
    for field in ["completions", "selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex"] {
        if field == "completions" && indexed_elastic {
            continue;
        }
        if spec.get(field) != old_spec.get(field) {
            let path = format!("spec.{field}");
            let shown = spec.get(field).unwrap_or(&Value::Null);
            if field == "selector" {
                errs.push(invalid_shown(path, &go_label_selector(spec.get(field)), "field is immutable"));
            } else {
                errs.push(FieldError::invalid(path, shown, "field is immutable"));
            }
        }
    }
    // A suspended job that never started may still change its scheduling directives.
    let scheduling_mutable =
        old_spec.get("suspend").and_then(Value::as_bool) == Some(true) && !has(old, "/status/startTime");
    let comparable = |tpl: Option<&Value>| {
        let mut tpl = tpl.cloned().unwrap_or(Value::Null);
        if scheduling_mutable {
            for ptr in ["/metadata", "/spec"] {
                if let Some(m) = tpl.pointer_mut(ptr).and_then(Value::as_object_mut) {
                    for key in ["labels", "annotations", "nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                        m.remove(key);
                    }
                }
            }
        }
        tpl
    };
    if comparable(spec.get("template")) != comparable(old_spec.get("template")) {
        let shown = spec.get("template").map_or("null".to_owned(), Value::to_string);
        errs.push(invalid_shown("spec.template", &shown, "field is immutable"));
    }
}

pub(crate) fn cron_job(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let name = str_at(obj, "/metadata/name");
    if old.is_none() && name.len() > 52 {
        errs.push(FieldError::invalid("metadata.name", &Value::from(name), "must be no more than 52 characters"));
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let schedule = str_at(spec, "/schedule");
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_cron(schedule) {
            errs.push(FieldError::invalid("spec.schedule", &Value::from(schedule), &e));
        }
        let tz_allowed = old.is_some_and(|o| str_at(o, "/spec/schedule").contains("TZ"));
        if tz_allowed && schedule.contains("TZ") && has(spec, "/timeZone") {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &Value::from(schedule),
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        } else if !tz_allowed && schedule.contains("TZ") {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &Value::from(schedule),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonnegative(spec, "startingDeadlineSeconds", "spec", errs);
    let tz_changed = old.is_none_or(|o| o.pointer("/spec/timeZone") != spec.get("timeZone"));
    if tz_changed && let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        time_zone(tz, errs);
    }
    match str_at(spec, "/concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
        other => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            &Value::from(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let job_spec_value = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    job_spec(job_spec_value, "spec.jobTemplate.spec", errs);
    if let Some(sel) = job_spec_value.get("selector").filter(|s| !s.is_null()) {
        errs.push(invalid_shown(
            "spec.jobTemplate.spec.selector",
            &go_label_selector(Some(sel)),
            "`selector` will be auto-generated",
        ));
    }
    if job_spec_value.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            &Value::from(true),
            &["nil", "false"],
        ));
    }
    nonnegative(spec, "successfulJobsHistoryLimit", "spec", errs);
    nonnegative(spec, "failedJobsHistoryLimit", "spec", errs);
}

/// `validateTimeZone` without loading the zone database (Berth's core does no IO).
fn time_zone(tz: &str, errs: &mut Errors) {
    let shown = Value::from(tz);
    if tz.is_empty() {
        errs.push(FieldError::invalid("spec.timeZone", &shown, "timeZone must be nil or non-empty string"));
        return;
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !tz.split('/').all(part_ok) {
        errs.push(FieldError::invalid("spec.timeZone", &shown, &format!("unknown time zone {tz}")));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            &shown,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
}

// ---- cron ----------------------------------------------------------------------------------

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

/// Checks a schedule as `cron.ParseStandard` does, returning its error text.
pub fn parse_cron(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".to_owned());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let Some(space) = spec.find(' ') else {
            return Err(format!(
                "provided bad location {}: unknown time zone",
                &spec[spec.find('=').map_or(0, |i| i + 1)..]
            ));
        };
        spec = spec[space..].trim();
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => Ok(()),
            _ => match spec.strip_prefix("@every ") {
                Some(d) => go_duration(d).map_err(|e| format!("failed to parse duration {spec}: {e}")),
                None => Err(format!("unrecognized descriptor: {spec}")),
            },
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    for (field, bounds) in fields.iter().zip([MINUTES, HOURS, DOM, MONTHS, DOW]) {
        for expr in field.split(',').filter(|e| !e.is_empty()) {
            cron_range(expr, &bounds)?;
        }
    }
    Ok(())
}

fn cron_range(expr: &str, r: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (r.min, r.max)
    } else {
        let start = int_or_name(low_and_high[0], r)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, int_or_name(low_and_high[1], r)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_uint(range_and_step[1])?;
            if single {
                end = r.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < r.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", r.min));
    }
    if end > r.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", r.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_or_name(expr: &str, r: &Bounds) -> Result<u32, String> {
    let lower = expr.to_lowercase();
    match r.names.iter().find(|(name, _)| *name == lower) {
        Some((_, n)) => Ok(*n),
        None => parse_uint(expr),
    }
}

fn parse_uint(expr: &str) -> Result<u32, String> {
    let num: i64 = expr
        .parse()
        .map_err(|_| format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax"))?;
    if num < 0 {
        return Err(format!("negative number ({num}) not allowed: {expr}"));
    }
    u32::try_from(num)
        .map_err(|_| format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: value out of range"))
}

/// Go's `time.ParseDuration` syntax (`1h30m`, `90s`, `1.5h`).
fn go_duration(s: &str) -> Result<(), String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut rest = s.strip_prefix(['-', '+']).unwrap_or(s);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        if !matches!(unit, "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h") {
            return Err(format!("time: unknown unit {unit:?} in duration {orig:?}"));
        }
        rest = &rest[unit_len..];
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_cron;

    #[test]
    fn cron_schedules_parse_like_robfig() {
        for ok in [
            "*/5 * * * *",
            "0 0 * * 0",
            "0 9-17 * * mon-fri",
            "@hourly",
            "@every 1h30m",
            "TZ=UTC 0 * * * *",
            "0 0 1,15 * ?",
        ] {
            assert_eq!(parse_cron(ok), Ok(()), "{ok}");
        }
        assert_eq!(parse_cron("foo").unwrap_err(), "expected exactly 5 fields, found 1: [foo]");
        assert_eq!(parse_cron("* * * *").unwrap_err(), "expected exactly 5 fields, found 4: [* * * *]");
        assert_eq!(parse_cron("60 * * * *").unwrap_err(), "end of range (60) above maximum (59): 60");
        assert_eq!(parse_cron("* * 0 * *").unwrap_err(), "beginning of range (0) below minimum (1): 0");
        assert_eq!(parse_cron("5-1 * * * *").unwrap_err(), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(parse_cron("*/0 * * * *").unwrap_err(), "step of range should be a positive number: */0");
        assert_eq!(
            parse_cron("x * * * *").unwrap_err(),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(parse_cron("@often").unwrap_err(), "unrecognized descriptor: @often");
        assert_eq!(
            parse_cron("@every 1d").unwrap_err(),
            "failed to parse duration @every 1d: time: unknown unit \"d\" in duration \"1d\""
        );
    }
}
