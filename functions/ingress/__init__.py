"""The ingress's conversation stages, as collaborators the Ingress deployment is handed."""
