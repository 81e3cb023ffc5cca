//! A small image picker over the forest, for a dialog that can take any image (a rebase's new
//! backing file): type to filter, the arrows move, Enter picks, Esc goes back.

use std::path::Path;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::Browse;
use crate::forest::NodeId;
use crate::ops::guards;

/// What the picker shows: the filter typed, and the cursor among the images it lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picker {
    pub filter: String,
    pub selected: usize,
}

/// What a key did in the picker.
pub enum Picked {
    /// Still picking.
    Open,
    /// Back to the dialog, nothing picked.
    Back,
    Image(NodeId),
}

impl Picker {
    /// The images `image` could be rebased onto, as the forest names them: every readable
    /// image but `image` and those built on it (the chain would loop), matching every word
    /// of the filter (case-insensitive), in the forest's order.
    pub fn candidates(&self, browse: &Browse, image: &Path) -> Vec<NodeId> {
        let forest = &browse.forest;
        let Some(me) = forest.find(image) else {
            return Vec::new();
        };
        let above = guards::descendants(forest, me);
        let words: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        browse
            .rows
            .iter()
            .map(|r| r.id)
            .filter(|&id| id != me && !above.contains(&id) && forest.node(id).format.is_some())
            .filter(|&id| {
                let path = forest.node(id).path.to_string_lossy().to_lowercase();
                words.iter().all(|w| path.contains(w.as_str()))
            })
            .collect()
    }

    /// Takes a key: text edits the filter, Up/Down (and Tab) move, Enter picks, Esc goes back.
    pub fn key(&mut self, key: &KeyEvent, found: &[NodeId]) -> Picked {
        match key.code {
            KeyCode::Esc => return Picked::Back,
            KeyCode::Enter => {
                return found
                    .get(self.selected)
                    .map_or(Picked::Open, |&id| Picked::Image(id));
            }
            KeyCode::Down | KeyCode::Tab => self.selected += 1,
            KeyCode::Up | KeyCode::BackTab => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected += 10,
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Backspace => {
                self.filter.pop();
                self.selected = 0;
            }
            KeyCode::Char(c) if !c.is_control() => {
                self.filter.push(c);
                self.selected = 0;
            }
            _ => {}
        }
        self.selected = self.selected.min(found.len().saturating_sub(1));
        Picked::Open
    }
}
