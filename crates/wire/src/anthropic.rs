//! Anthropic Messages API wire types (filled in by the Anthropic work).
