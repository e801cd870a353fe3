//! Gemini generateContent wire types (filled in by the Gemini work).
