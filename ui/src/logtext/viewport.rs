//! Virtual scrolling arithmetic: which rows of a long list a scroll position
//! shows, and where they go.
//!
//! Rows have one fixed height. The scroll container contains a spacer as
//! tall as all rows, up to [`MAX_CONTENT_PX`], because browsers cap an
//! element's height at some millions of pixels (the cap differs between
//! browsers) and 1.5 million rows of 18 px are 27 million. Past the cap the scroll position
//! maps proportionally onto the rows, so the scrollbar still spans the whole
//! log and each wheel step moves more rows.

use std::ops::Range;

/// Maximum spacer height in CSS pixels. NOTE: chosen well below the height
/// caps reported for current browsers, not measured on each of them.
pub const MAX_CONTENT_PX: f64 = 8_000_000.0;

/// The geometry of a list of `rows` rows of `row_height` pixels shown in a
/// container `viewport` pixels tall.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Viewport {
    pub rows: usize,
    pub row_height: f64,
    pub viewport: f64,
}

impl Viewport {
    /// Height of all rows, in the rows' own pixels.
    fn rows_height(&self) -> f64 {
        self.rows as f64 * self.row_height
    }

    /// Returns the spacer's height in CSS pixels.
    pub fn content_height(&self) -> f64 {
        self.rows_height().min(MAX_CONTENT_PX)
    }

    /// Returns how many row pixels one scrolled pixel moves: 1 unless the
    /// rows outgrow [`MAX_CONTENT_PX`].
    fn scale(&self) -> f64 {
        let scrollable = self.content_height() - self.viewport;
        let rows_scrollable = self.rows_height() - self.viewport;
        if scrollable <= 0.0 || rows_scrollable <= scrollable {
            1.0
        } else {
            rows_scrollable / scrollable
        }
    }

    /// Returns the position in row pixels at the container's top edge.
    pub fn rows_top(&self, scroll_top: f64) -> f64 {
        scroll_top.max(0.0) * self.scale()
    }

    /// Returns the rows at least partly in view, widened by `overscan` rows
    /// on each side.
    pub fn visible(&self, scroll_top: f64, overscan: usize) -> Range<usize> {
        let top = self.rows_top(scroll_top);
        let first = (top / self.row_height).floor() as usize;
        let last = ((top + self.viewport) / self.row_height).ceil() as usize;
        first.saturating_sub(overscan).min(self.rows)..(last + overscan).min(self.rows)
    }

    /// Returns the CSS top, inside the spacer, of `row`'s element while the
    /// container is scrolled to `scroll_top`.
    pub fn row_offset(&self, row: usize, scroll_top: f64) -> f64 {
        scroll_top + (row as f64 * self.row_height - self.rows_top(scroll_top))
    }

    /// Returns the scroll position that puts `row` in the middle of the
    /// view, or as near as the ends allow.
    pub fn scroll_to_center(&self, row: usize) -> f64 {
        let rows_top = row as f64 * self.row_height - (self.viewport - self.row_height) / 2.0;
        self.clamp(rows_top / self.scale())
    }

    /// Returns the scroll position of the end of the list.
    pub fn scroll_to_end(&self) -> f64 {
        (self.content_height() - self.viewport).max(0.0)
    }

    /// Returns whether `row` lies wholly in view at `scroll_top`.
    pub fn shows_whole(&self, row: usize, scroll_top: f64) -> bool {
        let top = self.rows_top(scroll_top);
        let row_top = row as f64 * self.row_height;
        row_top >= top && row_top + self.row_height <= top + self.viewport
    }

    fn clamp(&self, scroll_top: f64) -> f64 {
        scroll_top.clamp(0.0, self.scroll_to_end())
    }
}

/// Reads a line anchor such as `#L123` (a URL's hash) into the 1-based
/// line number; `None` for any other hash and for `#L0`.
pub fn parse_line_anchor(hash: &str) -> Option<usize> {
    let digits = hash.strip_prefix("#L")?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&number| number > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_anchor_reads_only_l_and_digits() {
        assert_eq!(parse_line_anchor("#L123"), Some(123));
        assert_eq!(parse_line_anchor("#L0"), None);
        assert_eq!(parse_line_anchor("#L"), None);
        assert_eq!(parse_line_anchor("#L12a"), None);
        assert_eq!(parse_line_anchor("#l12"), None);
        assert_eq!(parse_line_anchor(""), None);
    }

    fn viewport(rows: usize) -> Viewport {
        Viewport {
            rows,
            row_height: 20.0,
            viewport: 200.0,
        }
    }

    #[test]
    fn short_list_maps_pixels_one_to_one() {
        let list = viewport(1_000);
        assert_eq!(list.content_height(), 20_000.0);
        assert_eq!(list.visible(400.0, 0), 20..30);
        assert_eq!(list.visible(410.0, 5), 15..36);
        assert_eq!(list.row_offset(20, 400.0), 400.0);
        assert_eq!(list.scroll_to_end(), 19_800.0);
    }

    #[test]
    fn visible_rows_stop_at_the_ends() {
        let list = viewport(3);
        assert_eq!(list.visible(0.0, 10), 0..3);
        assert_eq!(viewport(0).visible(0.0, 10), 0..0);
    }

    #[test]
    fn huge_list_scales_scrolling_to_reach_the_last_row() {
        let list = viewport(2_000_000);
        assert_eq!(list.content_height(), MAX_CONTENT_PX);

        let end = list.scroll_to_end();
        let shown = list.visible(end, 0);
        assert_eq!(shown.end, 2_000_000);
        assert_eq!(shown.start, 2_000_000 - 10);
        // The last row sits at the bottom of the view.
        let last_top = list.row_offset(1_999_999, end);
        assert_eq!(last_top, end + 180.0);
    }

    #[test]
    fn centering_a_row_puts_it_in_the_middle() {
        let list = viewport(1_000);
        let top = list.scroll_to_center(500);
        assert_eq!(top, 500.0 * 20.0 - 90.0);
        assert!(list.shows_whole(500, top));
        assert!(!list.shows_whole(520, top));

        assert_eq!(list.scroll_to_center(0), 0.0);
        assert_eq!(list.scroll_to_center(999), list.scroll_to_end());
    }

    #[test]
    fn centering_works_on_a_scaled_list() {
        let list = viewport(2_000_000);
        let top = list.scroll_to_center(1_234_567);
        assert!(list.shows_whole(1_234_567, top));
        assert!(list.visible(top, 0).contains(&1_234_567));
    }
}
