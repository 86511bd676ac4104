//! Checks before a replay starts, from the tapes' headers: never at production, never
//! unscrubbed data unless allowed, and a warning when comparison lacks the descriptor set
//! the tapes were scrubbed with.

use crate::source::Source;
use crate::{ReplayConfig, ReplayError};

/// Refuses to replay at the service a tape was recorded from.
pub(crate) fn production(config: &ReplayConfig, source: &Source) -> Result<(), ReplayError> {
    if config.allow_production_target {
        return Ok(());
    }
    for report in source.reader().reports() {
        let Some(header) = &report.header else { continue };
        for (k, v) in &header.labels {
            if k != "upstream" {
                continue;
            }
            if let Ok(uri) = v.parse::<http::Uri>() {
                if let Some(a) = uri.authority() {
                    if config.rewrite.is_target(a.as_str(), uri.scheme_str().unwrap_or("http")) {
                        return Err(ReplayError::ProductionTarget(v.clone()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Tapes without a scrub fingerprint hold production's data as it was: refused unless
/// allowed (then a warning), and their credentials are never sent as recorded.
/// Tapes scrubbed with a descriptor set lost protobuf fields a rule took (numbers,
/// messages): compared without the same descriptor set, by field number, those come back
/// as differences on every answer. Said before the run, not found out from the report.
pub(crate) fn warn_missing_schema(config: &ReplayConfig, source: &Source) {
    let Some(compare) = &config.compare else { return };
    if compare.proto.is_some() {
        return;
    }
    let with_schema = source.reader().reports().iter().find_map(|r| {
        let fingerprint = r.header.as_ref()?.scrub_fingerprint.as_deref()?;
        let proto = fingerprint.split(' ').find_map(|part| part.strip_prefix("proto:"))?;
        Some((r.path.display().to_string(), proto.to_string()))
    });
    if let Some((path, proto)) = with_schema {
        tracing::warn!(
            "{path} was scrubbed with a protobuf descriptor set (proto:{proto}); pass the same --proto-descriptor to              compare gRPC messages by field name (without it, fields the scrubber removed count as differences)"
        );
    }
}

pub(crate) fn unscrubbed(config: &ReplayConfig, source: &Source) -> Result<(), ReplayError> {
    let reports = source.reader().reports();
    let unscrubbed: Vec<_> =
        reports.iter().filter(|r| r.header.as_ref().is_some_and(|h| h.scrub_fingerprint.is_none())).collect();
    let Some(first) = unscrubbed.first() else { return Ok(()) };
    let which = format!("{} of {} tape segments (first: {})", unscrubbed.len(), reports.len(), first.path.display());
    if config.rewrite.keep_credentials {
        return Err(ReplayError::Config(format!(
            "{which} were not scrubbed: --keep-credentials would send production's own credentials to the target; \
             scrub them first (`tapedeck scrub TAPES -o DIR`) or drop --keep-credentials"
        )));
    }
    if !config.allow_unscrubbed {
        return Err(ReplayError::Config(format!(
            "{which} were not scrubbed (imported, or captured with --no-scrub): their paths, queries, bodies and \
             headers are production's data as it was, and would go to the target; scrub them first (`tapedeck scrub \
             TAPES -o DIR`), or pass --allow-unscrubbed to send them as they are"
        )));
    }
    tracing::warn!(
        "{which} were not scrubbed: their paths, queries, bodies and headers go to the target as production recorded \
         them (credential headers and client addresses are withheld); scrub them first with `tapedeck scrub TAPES -o DIR`"
    );
    Ok(())
}
