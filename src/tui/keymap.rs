//! The keys bound to each action (from `[keys]` in the config, defaults from the action
//! table of [`crate::actions`]), and the key events they match.

use ratatui::crossterm::event::{KeyCode as CtKey, KeyEvent, KeyModifiers};

pub use crate::actions::Action;
use crate::actions::Place;
use crate::config::{KeyCode, KeySpec, Keys, NamedKey};

/// Keys to actions.
#[derive(Clone, Debug)]
pub struct Keymap {
    /// Browsing bindings in help order.
    pub browsing: Vec<(Action, Vec<KeySpec>)>,
    /// The dialog layer's bindings: confirm, close, and what changes a dialog's request.
    pub dialogs: Vec<(Action, Vec<KeySpec>)>,
}

impl Keymap {
    /// The keymap of the `[keys]` table.
    pub fn new(keys: &Keys) -> Keymap {
        let layer = |place| {
            keys.all()
                .filter(|(a, _)| a.def().place == place)
                .map(|(a, k)| (a, k.to_vec()))
                .collect()
        };
        Keymap {
            browsing: layer(Place::Browse),
            dialogs: layer(Place::Dialog),
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

    /// The dialog action bound to `key`.
    pub fn dialog(&self, key: &KeyEvent) -> Option<Action> {
        let spec = spec_of(key)?;
        self.dialogs
            .iter()
            .find(|(_, ks)| ks.contains(&spec))
            .map(|(a, _)| *a)
    }

    /// Whether `key` confirms or closes a dialog (any other dialog key leaves a message
    /// or a question open).
    pub fn answers(&self, key: &KeyEvent) -> Option<Action> {
        self.dialog(key)
            .filter(|a| matches!(a, Action::Confirm | Action::Close))
    }

    /// The first key of an action, as a dialog's key line shows it: `j`.
    pub fn first_key_of(&self, action: Action) -> String {
        self.specs_of(action)
            .first()
            .map(KeySpec::to_string)
            .unwrap_or_default()
    }

    /// The first key of the action named `name` in `[keys]` (what a refusal's advice names).
    pub fn first_key_named(&self, name: &str) -> String {
        crate::actions::ACTIONS
            .iter()
            .find(|d| d.name == name)
            .map(|d| self.first_key_of(d.action))
            .unwrap_or_default()
    }

    /// The keys of an action, as the help and the hints show them: `j/Down`.
    pub fn keys_of(&self, action: Action) -> String {
        self.specs_of(action)
            .iter()
            .map(KeySpec::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }

    fn specs_of(&self, action: Action) -> &[KeySpec] {
        self.browsing
            .iter()
            .chain(&self.dialogs)
            .find(|(b, _)| *b == action)
            .map_or(&[], |(_, ks)| &ks[..])
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
        let km = Keymap::new(&crate::config::Config::default().keys);
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
        assert_eq!(km.browse(&key(CtKey::Char('w'), KeyModifiers::NONE)), None);
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
    fn every_browsing_action_of_the_table_is_bound() {
        let km = Keymap::new(&crate::config::Config::default().keys);
        let table: Vec<Action> = crate::actions::ACTIONS
            .iter()
            .filter(|d| d.place == Place::Browse)
            .map(|d| d.action)
            .collect();
        let bound: Vec<Action> = km.browsing.iter().map(|(a, _)| *a).collect();
        assert_eq!(bound, table);
        assert!(km.browsing.iter().all(|(_, k)| !k.is_empty()));
    }

    #[test]
    fn remapped_keys_from_config() {
        let c = crate::config::parse("[keys]\ndown = [\"J\"]\nclose = [\"Esc\", \"q\"]\n").unwrap();
        let km = Keymap::new(&c.keys);
        assert_eq!(
            km.browse(&key(CtKey::Char('J'), KeyModifiers::SHIFT)),
            Some(Action::Down)
        );
        assert_eq!(km.browse(&key(CtKey::Char('j'), KeyModifiers::NONE)), None);
        assert_eq!(
            km.dialog(&key(CtKey::Char('q'), KeyModifiers::NONE)),
            Some(Action::Close)
        );
    }
}
