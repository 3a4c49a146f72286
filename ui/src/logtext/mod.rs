//! Log text as a terminal would show it: a store of lines built from raw
//! chunks, ANSI styles, and search. Pure Rust, tested natively; the log
//! view in the app renders from it.
//!
//! ```
//! use danube_ui::logtext::{LineStore, Query, Stream, RENDER_MAX_CHARS};
//!
//! let mut store = LineStore::new();
//! store.push(Stream::Stdout, b"\x1b[32mok\x1b[0m 50%\r");
//! store.push(Stream::Stdout, b"\x1b[32mok\x1b[0m done\n");
//! let line = store.line(0).unwrap();
//! assert_eq!(line.text(), "ok done");
//! assert_eq!(line.spans(RENDER_MAX_CHARS).spans.len(), 2);
//!
//! let query = Query::new("DONE").unwrap();
//! assert_eq!(query.matching_lines(&store, 0..store.line_count()), [0]);
//! ```

mod chunk;
mod decoder;
mod lines;
mod search;
mod style;
mod styled;
mod viewport;

pub use chunk::{ChunkError, chunk_bytes};
pub use lines::{
    Line, LineStore, MAX_TEXT_BYTES, RENDER_MAX_CHARS, Rendered, Span, Stream, Streams,
};
pub use search::{Piece, Query, mark_matches};
pub use style::{Color, SgrParam, Style, flag};
pub use styled::{StyledPiece, styled_lines};
pub use viewport::{MAX_CONTENT_PX, Viewport, parse_line_anchor};
