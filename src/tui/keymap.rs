//! Actions, their descriptions, and the keys bound to them (from `[keys]` in the config).
//! The help screen is generated from the same table, so it cannot drift.

use ratatui::crossterm::event::{KeyCode as CtKey, KeyEvent, KeyModifiers};

use crate::config::{KeyCode, KeySpec, Keys, NamedKey};

/// Everything a key can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Up,
    Down,
    Fold,
    Unfold,
    First,
    Last,
    PageUp,
    PageDown,
    Backing,
    Overlay,
    Filter,
    Commit,
    Protect,
    Cancel,
    Rescan,
    Help,
    Quit,
    Confirm,
    Close,
}

impl Action {
    /// The action a `[keys]` entry of this name binds.
    pub fn named(name: &str) -> Option<Action> {
        Some(match name {
            "up" => Action::Up,
            "down" => Action::Down,
            "fold" => Action::Fold,
            "unfold" => Action::Unfold,
            "first" => Action::First,
            "last" => Action::Last,
            "page_up" => Action::PageUp,
            "page_down" => Action::PageDown,
            "backing" => Action::Backing,
            "overlay" => Action::Overlay,
            "filter" => Action::Filter,
            "commit" => Action::Commit,
            "protect" => Action::Protect,
            "cancel" => Action::Cancel,
            "rescan" => Action::Rescan,
            "help" => Action::Help,
            "quit" => Action::Quit,
            "confirm" => Action::Confirm,
            "close" => Action::Close,
            _ => return None,
        })
    }

    /// What the help screen says.
    pub fn description(self) -> &'static str {
        match self {
            Action::Up => "move up",
            Action::Down => "move down",
            Action::Fold => "fold the overlays (on a leaf: go to its backing image)",
            Action::Unfold => "unfold the overlays",
            Action::First => "go to the first image",
            Action::Last => "go to the last image",
            Action::PageUp => "one page up",
            Action::PageDown => "one page down",
            Action::Backing => "jump to the backing image",
            Action::Overlay => "jump to the first overlay",
            Action::Filter => "filter by name (Enter keeps it, Esc clears it)",
            Action::Commit => "commit the selected overlay into its backing image",
            Action::Protect => "toggle keep-RO (protect) on the selected image until quit",
            Action::Cancel => "cancel the running commit",
            Action::Rescan => "scan the paths again",
            Action::Help => "show or hide this help",
            Action::Quit => "quit (a running commit is cancelled and cleaned up first)",
            Action::Confirm => "in a dialog: confirm",
            Action::Close => "in a dialog: close",
        }
    }
}

/// Keys to actions.
#[derive(Clone, Debug)]
pub struct Keymap {
    /// Browsing bindings in help order.
    pub browsing: Vec<(Action, Vec<KeySpec>)>,
    pub confirm: Vec<KeySpec>,
    pub close: Vec<KeySpec>,
}

impl Keymap {
    /// The keymap of the `[keys]` table.
    pub fn new(keys: &Keys) -> Keymap {
        Keymap {
            browsing: keys
                .browsing()
                .into_iter()
                .filter_map(|(name, k)| Some((Action::named(name)?, k.get_ref().clone())))
                .collect(),
            confirm: keys.confirm.get_ref().clone(),
            close: keys.close.get_ref().clone(),
        }
    }

    /// The browsing action bound to `key`.
    pub fn browse(&self, key: &KeyEvent) -> Option<Action> {
        let spec = spec_of(key)?;
        self.browsing
            .iter()
            .find(|(_, ks)| ks.contains(&spec))
            .map(|(a, _)| *a)
    }

    /// The dialog action bound to `key` (confirm or close).
    pub fn dialog(&self, key: &KeyEvent) -> Option<Action> {
        let spec = spec_of(key)?;
        if self.confirm.contains(&spec) {
            Some(Action::Confirm)
        } else if self.close.contains(&spec) {
            Some(Action::Close)
        } else {
            None
        }
    }

    /// The keys of an action, as the help and the hints show them: `j/Down`.
    pub fn keys_of(&self, action: Action) -> String {
        let ks = match action {
            Action::Confirm => &self.confirm,
            Action::Close => &self.close,
            a => match self.browsing.iter().find(|(b, _)| *b == a) {
                Some((_, ks)) => ks,
                None => return String::new(),
            },
        };
        ks.iter()
            .map(KeySpec::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The config's spelling of a terminal key event. Shift is folded into characters.
pub fn spec_of(key: &KeyEvent) -> Option<KeySpec> {
    let m = key.modifiers;
    let code = match key.code {
        CtKey::Char(c) => KeyCode::Char(c),
        CtKey::F(n) => KeyCode::F(n),
        CtKey::Up => KeyCode::Named(NamedKey::Up),
        CtKey::Down => KeyCode::Named(NamedKey::Down),
        CtKey::Left => KeyCode::Named(NamedKey::Left),
        CtKey::Right => KeyCode::Named(NamedKey::Right),
        CtKey::Enter => KeyCode::Named(NamedKey::Enter),
        CtKey::Esc => KeyCode::Named(NamedKey::Esc),
        CtKey::Tab => KeyCode::Named(NamedKey::Tab),
        CtKey::Backspace => KeyCode::Named(NamedKey::Backspace),
        CtKey::Delete => KeyCode::Named(NamedKey::Delete),
        CtKey::Home => KeyCode::Named(NamedKey::Home),
        CtKey::End => KeyCode::Named(NamedKey::End),
        CtKey::PageUp => KeyCode::Named(NamedKey::PageUp),
        CtKey::PageDown => KeyCode::Named(NamedKey::PageDown),
        _ => return None,
    };
    let is_char = matches!(code, KeyCode::Char(_));
    Some(KeySpec {
        ctrl: m.contains(KeyModifiers::CONTROL),
        alt: m.contains(KeyModifiers::ALT),
        shift: m.contains(KeyModifiers::SHIFT) && !is_char,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventKind;

    fn key(code: CtKey, m: KeyModifiers) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: m,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    #[test]
    fn default_bindings() {
        let km = Keymap::new(&Keys::default());
        assert_eq!(
            km.browse(&key(CtKey::Char('j'), KeyModifiers::NONE)),
            Some(Action::Down)
        );
        assert_eq!(
            km.browse(&key(CtKey::Down, KeyModifiers::NONE)),
            Some(Action::Down)
        );
        assert_eq!(
            km.browse(&key(CtKey::Char('G'), KeyModifiers::SHIFT)),
            Some(Action::Last)
        );
        assert_eq!(
            km.browse(&key(CtKey::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(km.browse(&key(CtKey::Char('z'), KeyModifiers::NONE)), None);
        assert_eq!(
            km.dialog(&key(CtKey::Enter, KeyModifiers::NONE)),
            Some(Action::Confirm)
        );
        assert_eq!(
            km.dialog(&key(CtKey::Esc, KeyModifiers::NONE)),
            Some(Action::Close)
        );
        assert_eq!(km.keys_of(Action::Down), "j/Down");
    }

    #[test]
    fn every_browsing_entry_names_an_action() {
        let keys = Keys::default();
        assert_eq!(Keymap::new(&keys).browsing.len(), keys.browsing().len());
    }

    #[test]
    fn remapped_keys_from_config() {
        let c = crate::config::parse("[keys]\ndown = [\"n\"]\nclose = [\"Esc\", \"q\"]\n").unwrap();
        let km = Keymap::new(&c.keys);
        assert_eq!(
            km.browse(&key(CtKey::Char('n'), KeyModifiers::NONE)),
            Some(Action::Down)
        );
        assert_eq!(km.browse(&key(CtKey::Char('j'), KeyModifiers::NONE)), None);
        assert_eq!(
            km.dialog(&key(CtKey::Char('q'), KeyModifiers::NONE)),
            Some(Action::Close)
        );
    }
}
