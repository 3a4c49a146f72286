//! One rendered line of the log.

use leptos::ev;
use leptos::prelude::*;

use super::LogState;
use crate::logtext::{RENDER_MAX_CHARS, Stream, mark_matches};

/// The inputs of a row's rendering. A row is rendered again only when its key
/// changes, so the key carries every input of [`render`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RowKey {
    /// Line index, 0-based.
    pub line: usize,
    /// The store's batch count while this is the last line, which may still
    /// change; 0 for earlier lines, which are final.
    pub tail: u64,
    /// The search's revision, for the match marks.
    pub search: u64,
    /// The line contains the current match.
    pub current: bool,
    /// The line is the one the URL's `#L` names.
    pub anchored: bool,
}

/// A piece of text with its CSS.
struct Piece {
    text: String,
    classes: String,
    style: String,
    matched: bool,
}

pub(super) fn render(state: LogState, key: RowKey) -> impl IntoView {
    let query = state.search.query.get_value();
    let content = state.store.with_value(|store| {
        let line = store.line(key.line)?;
        let rendered = line.spans(RENDER_MAX_CHARS);
        let matches = query
            .as_ref()
            .map(|query| query.find_in(rendered.text))
            .unwrap_or_default();
        let pieces: Vec<Piece> = mark_matches(&rendered.spans, &matches)
            .into_iter()
            .map(|piece| Piece {
                text: piece.text.to_owned(),
                classes: piece.style.css_classes(),
                style: piece.style.css_inline(),
                matched: piece.matched,
            })
            .collect();
        Some((pieces, rendered.hidden_bytes, line.streams().primary()))
    });
    let (pieces, hidden_bytes, stream) = content.unwrap_or((Vec::new(), 0, Stream::Stdout));

    let number = key.line + 1;
    let mut classes = String::from("log-line");
    match stream {
        Stream::Stderr => classes.push_str(" stderr"),
        Stream::Engine => classes.push_str(" engine"),
        Stream::Stdout => {}
    }
    if key.current {
        classes.push_str(" current-match");
    }
    if key.anchored {
        classes.push_str(" anchored");
    }
    let line = key.line;

    view! {
        <div class=classes data-testid="log-line" data-line=number>
            <a
                class="log-number"
                href=format!("#L{number}")
                on:click=move |event: ev::MouseEvent| {
                    event.prevent_default();
                    state.anchor_line(line);
                }
            >
                {number}
            </a>
            <span class="log-text">
                {pieces.into_iter().map(render_piece).collect_view()}
                {(hidden_bytes > 0).then(|| view! {
                    <span class="log-more">{format!("… {hidden_bytes} more bytes")}</span>
                })}
            </span>
        </div>
    }
}

fn render_piece(piece: Piece) -> AnyView {
    let class = (!piece.classes.is_empty()).then_some(piece.classes);
    let style = (!piece.style.is_empty()).then_some(piece.style);
    if piece.matched {
        view! { <mark class="log-match"><span class=class style=style>{piece.text}</span></mark> }
            .into_any()
    } else {
        view! { <span class=class style=style>{piece.text}</span> }.into_any()
    }
}
