//! Text styles as ANSI SGR (Select Graphic Rendition) sequences set them,
//! and how they map to CSS.

/// A foreground or background colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Color {
    /// The theme's text or background colour.
    #[default]
    Default,
    /// An entry of the 256-colour palette: 0–7 the standard colours, 8–15
    /// their bright forms, 16–231 a 6×6×6 cube, 232–255 a grey ramp.
    Indexed(u8),
    /// A truecolor value.
    Rgb(u8, u8, u8),
}

impl Color {
    /// Returns the CSS colour of a palette entry above 15 or a truecolor value;
    /// `None` for the theme's default and the 16 themed colours.
    fn css_value(self) -> Option<String> {
        match self {
            Color::Default => None,
            Color::Indexed(index) if index < 16 => None,
            Color::Indexed(index) => {
                let (r, g, b) = palette_rgb(index);
                Some(format!("#{r:02x}{g:02x}{b:02x}"))
            }
            Color::Rgb(r, g, b) => Some(format!("#{r:02x}{g:02x}{b:02x}")),
        }
    }

    /// Returns the CSS variable of a themed colour, for inverse video.
    fn css_var(self, default: &str) -> String {
        match self {
            Color::Default => format!("var({default})"),
            Color::Indexed(index) if index < 16 => format!("var(--ansi-{index})"),
            other => other
                .css_value()
                .expect("colours past the 16 themed ones have a CSS value"),
        }
    }
}

/// Returns the RGB value of a 256-colour palette entry from 16 on, as xterm defines
/// the cube (levels 0, 95, 135, 175, 215, 255) and the grey ramp (8 to 238
/// in steps of 10).
fn palette_rgb(index: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    if index >= 232 {
        let grey = 8 + (index - 232) * 10;
        return (grey, grey, grey);
    }
    let cube = index - 16;
    (
        LEVELS[usize::from(cube / 36)],
        LEVELS[usize::from((cube / 6) % 6)],
        LEVELS[usize::from(cube % 6)],
    )
}

/// Flags of [`Style::flags`].
pub mod flag {
    pub const BOLD: u8 = 1;
    pub const DIM: u8 = 1 << 1;
    pub const ITALIC: u8 = 1 << 2;
    pub const UNDERLINE: u8 = 1 << 3;
    pub const INVERSE: u8 = 1 << 4;
    pub const STRIKE: u8 = 1 << 5;
}

/// The look of a run of text. `Style::default()` is plain text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Style {
    pub fg: Color,
    pub bg: Color,
    /// Bits of [`flag`].
    pub flags: u8,
}

impl Style {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Applies the parameters of one SGR sequence (`ESC [ params m`).
    ///
    /// `params` are the numbers separated by `;`. A `:`-separated group such
    /// as `38:2::255:0:0` arrives as one parameter whose `subparams` are the
    /// numbers after its first `:`. An empty sequence resets, as does `0`.
    /// Unknown codes are ignored.
    pub fn apply_sgr(&mut self, params: &[SgrParam]) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let mut index = 0;
        while index < params.len() {
            let param = &params[index];
            index += 1;
            match param.value {
                0 => *self = Style::default(),
                1 => self.flags |= flag::BOLD,
                2 => self.flags |= flag::DIM,
                3 => self.flags |= flag::ITALIC,
                4 => self.flags |= flag::UNDERLINE,
                7 => self.flags |= flag::INVERSE,
                9 => self.flags |= flag::STRIKE,
                21 => self.flags |= flag::UNDERLINE,
                22 => self.flags &= !(flag::BOLD | flag::DIM),
                23 => self.flags &= !flag::ITALIC,
                24 => self.flags &= !flag::UNDERLINE,
                27 => self.flags &= !flag::INVERSE,
                29 => self.flags &= !flag::STRIKE,
                code @ 30..=37 => self.fg = Color::Indexed((code - 30) as u8),
                39 => self.fg = Color::Default,
                code @ 40..=47 => self.bg = Color::Indexed((code - 40) as u8),
                49 => self.bg = Color::Default,
                code @ 90..=97 => self.fg = Color::Indexed((code - 90 + 8) as u8),
                code @ 100..=107 => self.bg = Color::Indexed((code - 100 + 8) as u8),
                code @ (38 | 48) => {
                    let color = if param.subparams.is_empty() {
                        // `38;5;n` or `38;2;r;g;b`: the colour takes the
                        // next parameters.
                        let rest: Vec<u16> = params[index..].iter().map(|p| p.value).collect();
                        let (color, used) = extended_color(&rest);
                        index += used;
                        color
                    } else {
                        extended_color_colon(&param.subparams)
                    };
                    if let Some(color) = color {
                        if code == 38 {
                            self.fg = color;
                        } else {
                            self.bg = color;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Returns the CSS classes of this style, space-separated: `ansi-fg-N` and
    /// `ansi-bg-N` for the 16 themed colours, and `ansi-bold`, `ansi-dim`,
    /// `ansi-italic`, `ansi-underline`, `ansi-strike`.
    pub fn css_classes(&self) -> String {
        let mut classes = Vec::new();
        let (fg, bg) = self.painted_colors();
        if let Some(index) = themed_index(fg) {
            classes.push(format!("ansi-fg-{index}"));
        }
        if let Some(index) = themed_index(bg) {
            classes.push(format!("ansi-bg-{index}"));
        }
        for (bit, name) in [
            (flag::BOLD, "ansi-bold"),
            (flag::DIM, "ansi-dim"),
            (flag::ITALIC, "ansi-italic"),
            (flag::UNDERLINE, "ansi-underline"),
            (flag::STRIKE, "ansi-strike"),
        ] {
            if self.has(bit) {
                classes.push(name.to_owned());
            }
        }
        classes.join(" ")
    }

    /// Returns the inline CSS for what classes cannot express: palette entries from 16
    /// on, truecolor, and inverse video of the theme's default colours.
    pub fn css_inline(&self) -> String {
        let mut css = String::new();
        if self.has(flag::INVERSE) {
            // The swapped default colours are theme variables, not classes.
            if self.bg == Color::Default {
                css.push_str(&format!("color:{};", self.bg.css_var("--bg")));
            }
            if self.fg == Color::Default {
                css.push_str(&format!("background-color:{};", self.fg.css_var("--fg")));
            }
        }
        let (fg, bg) = self.painted_colors();
        if let Some(value) = fg.css_value() {
            css.push_str(&format!("color:{value};"));
        }
        if let Some(value) = bg.css_value() {
            css.push_str(&format!("background-color:{value};"));
        }
        css
    }

    /// Foreground and background as painted, after inverse video.
    fn painted_colors(&self) -> (Color, Color) {
        if self.has(flag::INVERSE) {
            (self.bg, self.fg)
        } else {
            (self.fg, self.bg)
        }
    }
}

fn themed_index(color: Color) -> Option<u8> {
    match color {
        Color::Indexed(index) if index < 16 => Some(index),
        _ => None,
    }
}

/// One `;`-separated SGR parameter with its `:`-separated subparameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SgrParam {
    pub value: u16,
    /// The numbers after the first `:`; an empty field reads as 0.
    pub subparams: Vec<u16>,
}

/// Reads `5;n` or `2;r;g;b` from the front of `rest`. Returns the colour,
/// if the form is complete and known, and how many parameters it used.
fn extended_color(rest: &[u16]) -> (Option<Color>, usize) {
    match rest {
        [5, index, ..] => (u8::try_from(*index).ok().map(Color::Indexed), 2),
        [2, r, g, b, ..] => (rgb(*r, *g, *b), 4),
        [5] | [2, ..] => (None, rest.len()),
        [_, ..] => (None, 1),
        [] => (None, 0),
    }
}

/// Reads the colon form: `5:n`, `2:r:g:b`, or `2:colorspace:r:g:b`.
fn extended_color_colon(subparams: &[u16]) -> Option<Color> {
    match subparams {
        [5, index] => u8::try_from(*index).ok().map(Color::Indexed),
        [2, r, g, b] | [2, _, r, g, b, ..] => rgb(*r, *g, *b),
        _ => None,
    }
}

fn rgb(r: u16, g: u16, b: u16) -> Option<Color> {
    Some(Color::Rgb(
        u8::try_from(r).ok()?,
        u8::try_from(g).ok()?,
        u8::try_from(b).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(values: &[u16]) -> Vec<SgrParam> {
        values
            .iter()
            .map(|&value| SgrParam {
                value,
                subparams: Vec::new(),
            })
            .collect()
    }

    fn styled(values: &[u16]) -> Style {
        let mut style = Style::default();
        style.apply_sgr(&params(values));
        style
    }

    #[test]
    fn sgr_sets_basic_and_bright_colours() {
        assert_eq!(styled(&[31]).fg, Color::Indexed(1));
        assert_eq!(styled(&[97]).fg, Color::Indexed(15));
        assert_eq!(styled(&[44]).bg, Color::Indexed(4));
        assert_eq!(styled(&[101]).bg, Color::Indexed(9));
    }

    #[test]
    fn sgr_reads_256_and_truecolor_forms() {
        let style = styled(&[38, 5, 208, 48, 2, 10, 20, 30, 1]);
        assert_eq!(style.fg, Color::Indexed(208));
        assert_eq!(style.bg, Color::Rgb(10, 20, 30));
        assert!(style.has(flag::BOLD));

        let mut colon = Style::default();
        colon.apply_sgr(&[SgrParam {
            value: 38,
            subparams: vec![2, 0, 1, 2, 3],
        }]);
        assert_eq!(colon.fg, Color::Rgb(1, 2, 3));
    }

    #[test]
    fn sgr_resets_and_clears_single_attributes() {
        let mut style = styled(&[1, 2, 3, 4, 7, 31, 42]);
        style.apply_sgr(&params(&[22, 24]));
        assert_eq!(style.flags, flag::ITALIC | flag::INVERSE);
        style.apply_sgr(&params(&[39]));
        assert_eq!(style.fg, Color::Default);
        assert_eq!(style.bg, Color::Indexed(2));
        style.apply_sgr(&[]);
        assert_eq!(style, Style::default());
    }

    #[test]
    fn sgr_ignores_out_of_range_colours() {
        let style = styled(&[38, 5, 300, 32]);
        assert_eq!(style.fg, Color::Indexed(2));
    }

    #[test]
    fn css_uses_classes_for_themed_colours_and_inline_for_others() {
        let style = styled(&[1, 31, 48, 5, 196]);
        assert_eq!(style.css_classes(), "ansi-fg-1 ansi-bold");
        assert_eq!(style.css_inline(), "background-color:#ff0000;");

        let grey = styled(&[38, 5, 244]);
        assert_eq!(grey.css_inline(), "color:#808080;");
    }

    #[test]
    fn css_swaps_colours_for_inverse_video() {
        let style = styled(&[7, 32]);
        assert_eq!(style.css_classes(), "ansi-bg-2");
        assert_eq!(style.css_inline(), "color:var(--bg);");
    }
}
