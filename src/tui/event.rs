//! The input thread: terminal events into the app's one channel.

use std::sync::mpsc::Sender;

use ratatui::crossterm::event::{self, Event};

use super::app::Msg;

/// Forwards key and resize events until the terminal or the channel goes away.
pub fn spawn_input(tx: Sender<Msg>) {
    std::thread::spawn(move || {
        loop {
            let msg = match event::read() {
                Ok(Event::Key(k)) => Msg::Key(k),
                Ok(Event::Resize(w, h)) => Msg::Resize(w, h),
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}
