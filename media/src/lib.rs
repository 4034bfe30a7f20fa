//! kubepbx media relay (being built).
