"""What every function shares: records, settings, errors, clocks, WeChat crypto and safe XML."""
