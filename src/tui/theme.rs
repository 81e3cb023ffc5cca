//! Colours from `[theme]`, or none at all with NO_COLOR / --no-color (emphasis then comes
//! from bold and reverse video alone).

use ratatui::style::{Color, Modifier, Style};

use crate::config::{self, Colour};

/// Resolved styles for everything the views colour.
#[derive(Clone, Debug)]
pub struct Theme {
    pub colour: bool,
    pub rw: Style,
    pub ro: Style,
    pub keep_ro: Style,
    pub in_use: Style,
    pub problem: Style,
    pub selection: Style,
    pub border: Style,
    pub gauge: Style,
    pub dim: Style,
}

fn color(c: Colour) -> Color {
    match c {
        Colour::Rgb(r, g, b) => Color::Rgb(r, g, b),
        Colour::Indexed(i) => Color::Indexed(i),
        Colour::Named(n) => match n {
            "black" => Color::Black,
            "red" => Color::Red,
            "green" => Color::Green,
            "yellow" => Color::Yellow,
            "blue" => Color::Blue,
            "magenta" => Color::Magenta,
            "cyan" => Color::Cyan,
            "gray" => Color::Gray,
            "dark-gray" => Color::DarkGray,
            "light-red" => Color::LightRed,
            "light-green" => Color::LightGreen,
            "light-yellow" => Color::LightYellow,
            "light-blue" => Color::LightBlue,
            "light-magenta" => Color::LightMagenta,
            "light-cyan" => Color::LightCyan,
            "white" => Color::White,
            _ => Color::Reset,
        },
    }
}

impl Theme {
    /// The styles of the `[theme]` table, or plain ones without colour.
    pub fn new(t: &config::Theme, colour: bool) -> Theme {
        if !colour {
            let plain = Style::default();
            return Theme {
                colour,
                rw: plain,
                ro: plain,
                keep_ro: plain.add_modifier(Modifier::BOLD),
                in_use: plain.add_modifier(Modifier::BOLD),
                problem: plain.add_modifier(Modifier::BOLD),
                selection: plain.add_modifier(Modifier::REVERSED),
                border: plain,
                gauge: plain.add_modifier(Modifier::REVERSED),
                dim: plain,
            };
        }
        let fg = |c| Style::default().fg(color(c));
        Theme {
            colour,
            rw: fg(t.rw).add_modifier(Modifier::BOLD),
            ro: fg(t.ro).add_modifier(Modifier::BOLD),
            keep_ro: fg(t.keep_ro).add_modifier(Modifier::BOLD),
            in_use: fg(t.in_use),
            problem: fg(t.problem).add_modifier(Modifier::BOLD),
            selection: Style::default()
                .bg(color(t.selection))
                .add_modifier(Modifier::BOLD),
            border: fg(t.border),
            gauge: fg(t.gauge),
            dim: Style::default().fg(Color::DarkGray),
        }
    }
}
