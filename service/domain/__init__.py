"""Domain logic of the control plane that needs neither a database nor a web layer."""
